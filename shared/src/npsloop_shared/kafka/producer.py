"""The project's Kafka producer: idempotent, `acks=all`, and a bounded wait for the broker's ack.

What "accepted" means here: `publish` and `publish_many` return only after the partition leader
acknowledged every record with `acks=all`, i.e. every in-sync replica appended it to its log (and
at least `min.insync.replicas` of them are in sync). From then on the record survives the loss of
any broker but the last in-sync one. With replication factor 1 (local runs) it means the single
broker's log. Only then may a caller answer 2xx or commit an offset.

aiokafka has no delivery timeout, and an idempotent producer retries a batch until it succeeds.
So each call bounds its wait with `ack_timeout`; on timeout, or any Kafka error, it raises
`BrokerUnavailable` and the caller must treat *all* its records as not accepted. Some may still be
written later by those retries — harmless, because every event carries a deterministic id
(`ce_id`) and consumers dedupe on it; the client is told to retry and will produce the same ids.

Records never go through aiokafka's per-record `send` (about ten microseconds of Python each):
`publish_many` packs its records into whole batches (`batching.py`), and single records from
concurrent `publish_record` calls are gathered and handed over together the same way.

Errors that leave the producer unusable (`OutOfOrderSequenceNumber`, a fenced producer, a dead
sender task) make the wrapper discard the aiokafka producer and create a fresh one (new producer
id) before the next publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    IllegalStateError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
)
from pydantic import BaseModel

from npsloop_shared.errors import ServiceUnavailable
from npsloop_shared.kafka.batching import (
    KafkaHeaders,
    OutgoingRecord,
    PartitionGates,
    SubmittedBatch,
    partition_for,
    partition_lists,
    submit_in_batches,
)

log = logging.getLogger(__name__)

__all__ = [
    "Acked",
    "BrokerUnavailable",
    "KafkaHeaders",
    "KafkaProducer",
    "OutgoingRecord",
    "encode_key",
    "encode_value",
]


class _NoDebugRecordDumps(logging.Filter):
    """aiokafka's DEBUG lines print every record's key and value, and whole produce requests:
    personal data (comments, emails). Whatever the configured level, they never leave."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


for _name in ("aiokafka.producer.producer", "aiokafka.conn"):
    logging.getLogger(_name).addFilter(_NoDebugRecordDumps())

DEFAULT_ACK_TIMEOUT: Final = 5.0
DEFAULT_RETRY_AFTER_SECONDS: Final = 5
# aiokafka keeps one produce request in flight per broker, so records gather anyway while the
# previous request is out; lingering only makes a lone record wait for company (fewer, fuller
# produce requests for a few milliseconds more per answer).
DEFAULT_LINGER_MS: Final = 0
DEFAULT_MAX_BATCH_BYTES: Final = 256 * 1024

# These leave aiokafka's producer unusable until it is recreated (a new producer id).
_FATAL_ERRORS: Final = (OutOfOrderSequenceNumber, ProducerFenced, IllegalStateError, ProducerClosed)


class BrokerUnavailable(ServiceUnavailable):
    """Kafka did not acknowledge in time or is unreachable: nothing may be reported as accepted."""

    def __init__(self, detail: str, *, retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS):
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})
        self.retry_after_seconds = retry_after_seconds


class Acked(NamedTuple):
    """Where the broker stored an acknowledged record."""

    topic: str
    partition: int
    offset: int


def encode_value(value: object) -> bytes:
    """JSON bytes for a record value: pydantic models through their own serializer, else orjson."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, BaseModel):
        return value.__pydantic_serializer__.to_json(value)
    return orjson.dumps(value)


def encode_key(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class KafkaProducer:
    """One long-lived producer per process; `start` once (in the lifespan), `stop` at shutdown."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "npsloop",
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS,
        linger_ms: int = DEFAULT_LINGER_MS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._ack_timeout = ack_timeout
        self._retry_after = retry_after_seconds
        self._linger_ms = linger_ms
        self._max_batch_bytes = max_batch_bytes
        self._producer: Any = None  # AIOKafkaProducer once started
        self._gates = PartitionGates()
        self._lifecycle = asyncio.Lock()
        self._recreating: asyncio.Task[None] | None = None
        # Single records waiting to be handed to aiokafka, and the task doing it.
        self._waiting: list[tuple[OutgoingRecord, asyncio.Future[Acked]]] = []
        self._handing_over: asyncio.Task[None] | None = None
        self._topics_seen: set[str] = set()  # topics whose partitions were known once

    @property
    def is_running(self) -> bool:
        return self._producer is not None

    @property
    def ack_timeout(self) -> float:
        return self._ack_timeout

    async def start(self) -> None:
        """Connect and obtain a producer id; raises `BrokerUnavailable` if Kafka is not there."""
        async with self._lifecycle:
            if self._producer is None:
                self._producer = await self._started_producer()

    async def start_with_retry(self, max_delay: float = 5.0) -> None:
        """`start`, retried with capped exponential backoff until it works (or is cancelled)."""
        delay = 0.2
        while True:
            try:
                await self.start()
            except BrokerUnavailable as exc:
                log.warning("kafka not reachable yet, retrying", extra={"detail": exc.detail})
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
            else:
                return

    async def stop(self, flush_seconds: float = 10.0) -> None:
        """Flush what is pending for up to `flush_seconds`, then close.

        Anything still unacknowledged at that point belongs to a call that already raised
        `BrokerUnavailable` (its own `ack_timeout` is shorter), so nothing promised is dropped.
        """
        if self._recreating is not None:
            self._recreating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recreating
            self._recreating = None
        async with self._lifecycle:
            producer, self._producer = self._producer, None
            if self._handing_over is not None:
                # Hands over what is waiting (or fails it, the producer being gone) and ends.
                with contextlib.suppress(asyncio.CancelledError):
                    await self._handing_over
            if producer is not None:
                await _close(producer, flush_seconds)

    async def publish(
        self,
        topic: str,
        value: object,
        *,
        key: str | bytes | None = None,
        headers: KafkaHeaders | None = None,
    ) -> Acked:
        """Publish one record and wait for its ack (see the module docstring for the promise)."""
        record = OutgoingRecord(topic, encode_value(value), encode_key(key), headers or [])
        return await self.publish_record(record)

    async def publish_record(self, record: OutgoingRecord) -> Acked:
        """Publish one encoded record and wait for its ack, at most `ack_timeout`.

        The record joins those of concurrent callers; they are handed to aiokafka together as
        whole batches (see `_hand_over_waiting`), which costs a fraction of one aiokafka
        `send` per record.
        """
        producer = self._usable()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_timeout
        if record.topic not in self._topics_seen:
            # Unknown topic: aiokafka waits for its metadata, forever once its client is
            # closed; bound that. Known topics (the hot path) skip this: aiokafka's own check
            # builds a set of the topic's partitions on every call.
            try:
                async with asyncio.timeout_at(deadline):
                    await partition_lists(producer, record.topic)
            except (TimeoutError, KafkaError) as exc:
                raise self._unavailable(producer, exc) from exc
            self._topics_seen.add(record.topic)
        delivery: asyncio.Future[Acked] = loop.create_future()
        self._waiting.append((record, delivery))
        if self._handing_over is None:
            self._handing_over = loop.create_task(self._hand_over_waiting())
        # A bare timer on the delivery future is far cheaper than `asyncio.timeout`, and this
        # runs for every single-response request.
        expiry = loop.call_at(deadline, _expire, delivery)
        try:
            return await delivery
        except (TimeoutError, KafkaError) as exc:
            raise self._unavailable(producer, exc) from exc
        finally:
            expiry.cancel()

    async def _hand_over_waiting(self) -> None:
        """Hand the waiting single records to aiokafka, a whole batch per partition, until none
        are left; settles each caller's future when its batch is acknowledged.

        While aiokafka still holds a partition's previous batch, the hand-over waits (see
        `PartitionGates`) and records keep gathering: each produce request then carries what
        arrived during the last one, as aiokafka's own `send` would, for far less Python.
        """
        try:
            if self._linger_ms > 0:
                # aiokafka lingers only over batches still open, and ours are closed when
                # handed over; so the first record of a hand-over waits here for company.
                await asyncio.sleep(self._linger_ms / 1000)
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                # Callers that timed out were already told "not accepted".
                waiting = [(record, future) for record, future in waiting if not future.done()]
                producer = self._producer
                if producer is None:
                    _fail_all(waiting, ProducerClosed())
                    continue
                try:
                    batches = await submit_in_batches(
                        producer, [record for record, _ in waiting], self._gates
                    )
                except Exception as exc:
                    if not isinstance(exc, KafkaError):
                        log.exception("handing records to aiokafka failed")
                    _fail_all(waiting, exc)
                    continue
                for batch in batches:
                    batch.delivery.add_done_callback(
                        functools.partial(_settle, batch, [waiting[i][1] for i, _ in batch.members])
                    )
        finally:
            self._handing_over = None

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> list[Acked]:
        """Publish records and wait until every one is acknowledged, at most `ack_timeout`.

        All or nothing from the caller's point of view: if any record is not acknowledged in
        time, `BrokerUnavailable` is raised and none may be reported as accepted. The records
        of one call keep their order within each partition.
        """
        producer = self._usable()
        try:
            async with asyncio.timeout(self._ack_timeout):
                batches = await submit_in_batches(producer, records, self._gates)
                bases = await asyncio.gather(*(batch.delivery for batch in batches))
        except (TimeoutError, KafkaError) as exc:
            raise self._unavailable(producer, exc) from exc
        acked: list[Acked] = [_NOT_YET] * len(records)
        for batch, base in zip(batches, bases, strict=True):
            for index, offset in batch.members:
                acked[index] = Acked(base.topic, base.partition, base.offset + offset)
        return acked

    async def ping(self, within_seconds: float = 1.0) -> bool:
        """True when a metadata request returns at least one broker within `within_seconds`."""
        producer = self._producer
        if producer is None:
            return False
        try:
            async with asyncio.timeout(within_seconds):
                cluster = await producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError, OSError):
            return False
        return bool(cluster.brokers())

    def _usable(self) -> Any:
        if self._producer is not None and _sender_died(self._producer):
            self._replace(self._producer, "sender stopped")
        if self._producer is None:
            raise BrokerUnavailable("Kafka is not connected", retry_after_seconds=self._retry_after)
        return self._producer

    def _unavailable(self, producer: Any, exc: TimeoutError | KafkaError) -> BrokerUnavailable:
        self._note_failure(producer, exc)
        if isinstance(exc, TimeoutError):
            detail = f"Kafka did not acknowledge within {self._ack_timeout:g} s"
        else:
            detail = f"Kafka refused the records ({type(exc).__name__})"
        return BrokerUnavailable(detail, retry_after_seconds=self._retry_after)

    def _note_failure(self, producer: Any, exc: TimeoutError | KafkaError) -> None:
        # A timeout alone means a slow or absent broker, which aiokafka rides out by itself;
        # a dead sender (however it died) or a fatal error does not heal.
        if isinstance(exc, _FATAL_ERRORS) or _sender_died(producer):
            self._replace(producer, type(exc).__name__)

    def _replace(self, broken: Any, reason: str) -> None:
        """Stop using `broken` at once (callers get 503 quickly) and build a new producer."""
        if self._producer is not broken:
            return  # already being replaced
        self._producer = None
        log.warning("kafka producer unusable, recreating", extra={"error": reason})
        self._recreating = asyncio.create_task(self._recreate(broken))

    async def _recreate(self, broken: Any) -> None:
        await _close(broken, flush_seconds=1.0)
        await self.start_with_retry()
        log.info("kafka producer recreated")

    async def _started_producer(self) -> Any:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            enable_idempotence=True,  # implies acks="all"; never pass api_version
            linger_ms=self._linger_ms,
            max_batch_size=self._max_batch_bytes,
            partitioner=partition_for,
            # Also bounds how long aiokafka waits for metadata or for room in a full batch.
            request_timeout_ms=max(1000, math.ceil(self._ack_timeout * 1000)),
        )
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            await _close(producer, flush_seconds=1.0)
            raise BrokerUnavailable(
                f"cannot connect to Kafka ({type(exc).__name__})",
                retry_after_seconds=self._retry_after,
            ) from exc
        return producer


_NOT_YET: Final = Acked("", -1, -1)


def _expire(delivery: asyncio.Future[Any]) -> None:
    # aiokafka skips futures that are already done when the ack comes later, so failing the
    # delivery future from outside is safe; the record itself may still be written.
    if not delivery.done():
        delivery.set_exception(TimeoutError())


def _settle(
    batch: SubmittedBatch, deliveries: list[asyncio.Future[Acked]], acked: asyncio.Future[Any]
) -> None:
    if acked.cancelled():
        _fail_all_futures(deliveries, KafkaError("batch cancelled"))
        return
    exc = acked.exception()
    if exc is not None:
        _fail_all_futures(deliveries, exc)
        return
    base = acked.result()
    for delivery, (_, offset) in zip(deliveries, batch.members, strict=True):
        if not delivery.done():  # timed out meanwhile
            delivery.set_result(Acked(base.topic, base.partition, base.offset + offset))


def _fail_all(
    waiting: list[tuple[OutgoingRecord, asyncio.Future[Acked]]], exc: BaseException
) -> None:
    _fail_all_futures([future for _, future in waiting], exc)


def _fail_all_futures(deliveries: list[asyncio.Future[Acked]], exc: BaseException) -> None:
    for delivery in deliveries:
        if not delivery.done():
            delivery.set_exception(exc)


def _sender_died(producer: Any) -> bool:
    # aiokafka's background sender ends only on an unrecoverable error, after which every send
    # fails with a copy of it. There is no public accessor, hence the private attribute.
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is not None and task.done()


async def _close(producer: Any, flush_seconds: float) -> None:
    try:
        async with asyncio.timeout(flush_seconds):
            await producer.stop()
    except TimeoutError:
        log.warning("kafka producer did not flush in time; unacknowledged records abandoned")
        await _abandon(producer)
    except (KafkaError, OSError) as exc:
        log.warning("kafka producer stop failed", extra={"error": type(exc).__name__})
        await _abandon(producer)


async def _abandon(producer: Any) -> None:
    # stop() waits for the flush forever while the broker is away (idempotent batches never
    # expire). Those records' callers were already answered "not accepted", so cancel the
    # sender and close the connections instead of leaking them. No public API does this.
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, KafkaError):
            await task
    with contextlib.suppress(KafkaError, OSError):
        await producer.client.close()
