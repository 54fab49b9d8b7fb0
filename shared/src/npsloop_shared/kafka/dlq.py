"""Dead-letter queue: a record no handler can process goes to `<topic>.dlq`, unchanged.

The dead-lettered record keeps the original key and value bytes and the original headers, plus
`npsloop_*` headers saying why (error class, a scrubbed and truncated message, attempts) and where
it came from (original topic, partition, offset), so it can be inspected and re-driven later.

A publish counts only once the broker acknowledged it (idempotent producer, `acks=all`) within
`ack_timeout_s`; anything else raises `DeadLetterUnavailable` and the caller must not commit the
original offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from npsloop_shared.kafka.topics import DLQ_SUFFIX

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE_CHARS = 512

ERROR_CLASS_HEADER = "npsloop_error_class"
ERROR_MESSAGE_HEADER = "npsloop_error_message"
ATTEMPTS_HEADER = "npsloop_attempts"
ORIGINAL_TOPIC_HEADER = "npsloop_original_topic"
ORIGINAL_PARTITION_HEADER = "npsloop_original_partition"
ORIGINAL_OFFSET_HEADER = "npsloop_original_offset"
DEAD_LETTER_HEADERS = frozenset(
    {
        ERROR_CLASS_HEADER,
        ERROR_MESSAGE_HEADER,
        ATTEMPTS_HEADER,
        ORIGINAL_TOPIC_HEADER,
        ORIGINAL_PARTITION_HEADER,
        ORIGINAL_OFFSET_HEADER,
    }
)

# Error messages can quote the data that failed; these keep credentials and respondent emails
# out of the DLQ (whose readers are operators, not the data's owners).
_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@"), "***@"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"(?i)\b(bearer|basic)\s+\S+"), r"\1 ***"),
    (re.compile(r"\b(?:whsec_|xox[abpr]-)\S+"), "***"),
    (re.compile(r"(?<!\d)\d{6,}:[\w-]{30,}"), "***"),  # Telegram bot token, also inside /bot…/
    (re.compile(r"(?i)\b(password|secret|token|api[_-]?key)=\S+"), r"\1=***"),
)


class DeadLetterUnavailable(Exception):
    """The DLQ did not acknowledge the record; the original offset must stay uncommitted."""


class DeadLetterSource(Protocol):
    """What a record must carry to be dead-lettered (aiokafka's `ConsumerRecord` fits too)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class DeadLetterPublisher(Protocol):
    """Puts a failed record on its dead-letter topic; returns only after the broker's ack."""

    async def publish(
        self, record: DeadLetterSource, error: BaseException, attempts: int
    ) -> None: ...

    async def close(self) -> None: ...


def dead_letter_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


def error_class_name(error: BaseException) -> str:
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"


def describe_error(error: BaseException) -> str:
    """A one-line, scrubbed, truncated description, safe for DLQ headers and logs."""
    if isinstance(error, ValidationError):
        text = _describe_validation_error(error)
    else:
        text = " ".join(str(error).split()) or type(error).__name__
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    return text


def _describe_validation_error(error: ValidationError) -> str:
    # pydantic's str() quotes the invalid input (a comment, an email); locations and types do not.
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    parts = [".".join(str(part) for part in p["loc"]) + f": {p['type']}" for p in problems]
    return f"{len(problems)} validation error(s) for {error.title}: " + "; ".join(parts)


def dead_letter_headers(
    record: DeadLetterSource, error: BaseException, attempts: int
) -> list[tuple[str, bytes]]:
    """The original headers (minus any earlier `npsloop_*` verdict) plus this failure's."""
    kept = [(key, value) for key, value in record.headers if key not in DEAD_LETTER_HEADERS]
    return [
        *kept,
        (ERROR_CLASS_HEADER, error_class_name(error).encode()),
        (ERROR_MESSAGE_HEADER, describe_error(error).encode()),
        (ATTEMPTS_HEADER, str(attempts).encode()),
        (ORIGINAL_TOPIC_HEADER, record.topic.encode()),
        (ORIGINAL_PARTITION_HEADER, str(record.partition).encode()),
        (ORIGINAL_OFFSET_HEADER, str(record.offset).encode()),
    ]


class KafkaDeadLetterPublisher:
    """Publishes to `<topic>.dlq` with its own idempotent producer, started on first use.

    The DLQ topic must exist (the topics helper creates `.dlq` beside every topic). After any
    failure the producer is discarded and a fresh one is made for the next attempt, because
    some producer errors (`OutOfOrderSequenceNumber`) leave it unusable.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "npsloop-dlq",
        ack_timeout_s: float = 10.0,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._ack_timeout_s = ack_timeout_s
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, record: DeadLetterSource, error: BaseException, attempts: int) -> None:
        """Send and wait for the ack; raise `DeadLetterUnavailable` if it did not come in time."""
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                producer = await self._started_producer()
                await producer.send_and_wait(
                    dead_letter_topic(record.topic),
                    value=record.value,
                    key=record.key,
                    headers=dead_letter_headers(record, error, attempts),
                )
        except (KafkaError, TimeoutError, OSError) as exc:
            await self._discard_producer()
            raise DeadLetterUnavailable(
                f"dead-letter topic {dead_letter_topic(record.topic)!r} did not acknowledge: "
                f"{type(exc).__name__}"
            ) from exc

    async def close(self) -> None:
        await self._discard_producer()

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap_servers,
                client_id=self._client_id,
                enable_idempotence=True,
            )
            try:
                await producer.start()
            except BaseException:
                await _stop_quietly(producer, self._ack_timeout_s)
                raise
            self._producer = producer
        return self._producer

    async def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer, self._ack_timeout_s)


async def _stop_quietly(producer: AIOKafkaProducer, timeout_s: float) -> None:
    # stop() flushes; with the broker gone that could wait for the request timeout, so bound it.
    with contextlib.suppress(KafkaError, TimeoutError, OSError):
        async with asyncio.timeout(timeout_s):
            await producer.stop()
    log.debug("dead-letter producer stopped")
