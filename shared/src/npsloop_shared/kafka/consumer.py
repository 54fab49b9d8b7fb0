"""At-least-once Kafka consumer: commit after the handler, poison to the DLQ, safe on rebalance.

What is committed when
----------------------
* A record becomes *committable* (`{tp: offset + 1}`) only when the handler returned for it — the
  handler owns its DB transaction, so that is after the DB commit — or when its copy on
  `<topic>.dlq` was acknowledged by the broker. Nothing else ever advances a committed offset
  (`enable_auto_commit=False`).
* Committable offsets are committed after polled batches, at most once per
  `ConsumerTuning.commit_interval_s` (each commit is a broker write; one per poll costs more
  than the records under load), and at once before every retry back-off (so a retrying record
  does not hold back the rest), when partitions are revoked in a rebalance, and on `stop()`.
* A crash can lose commits, never records: whatever was handled but not yet committed is
  redelivered, so handlers must be idempotent (dedupe on `ce_id`). A commit refused because the
  group rebalanced (`CommitFailedError`) is logged and tolerated for the same reason.

Failures
--------
* `PermanentMessageError` (and undecodable payloads: `pydantic.ValidationError`,
  `UnicodeDecodeError`, `json.JSONDecodeError`) → dead-lettered at once, then committable.
* Any other exception is transient: the same record is retried in-process with capped, jittered
  exponential back-off, up to `RetryPolicy.attempts` handler calls, then dead-lettered.
* If the DLQ does not acknowledge, the record stays uncommitted: its partition is rewound to it
  and retried from the handler after a back-off, while other partitions go on.
* Broker errors from polling are logged and retried with back-off; the loop does not die.

Records are handled in offset order within each partition. With a `batch_handler`, the records
of one poll are first handed to it together (its work must be atomic: one DB transaction); if
it fails, they go through the one-at-a-time path above, which retries, dead-letters and rewinds
each as usual. Under load a poll returns more records, so the batch grows with the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from npsloop_shared.errors import NpsloopError
from npsloop_shared.kafka.dlq import (
    DeadLetterPublisher,
    KafkaDeadLetterPublisher,
    describe_error,
    error_class_name,
)
from npsloop_shared.metrics import PerRegistry

log = logging.getLogger(__name__)

T = TypeVar("T")


class PermanentMessageError(NpsloopError):
    """Raised by a handler for a record that can never succeed (malformed, breaks the contract).

    The consumer does not retry it: the record goes to `<topic>.dlq` and its offset is committed.
    Keep the message free of secrets and personal data; it is copied into a DLQ header.
    """

    status, title, type_slug = 422, "Unprocessable Message", "unprocessable-message"


DEFAULT_PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    PermanentMessageError,
    ValidationError,
    UnicodeDecodeError,
    json.JSONDecodeError,  # orjson.JSONDecodeError subclasses it
)


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """One Kafka record as handlers see it: raw bytes, decoding is the handler's job."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @classmethod
    def from_kafka(cls, record: Any) -> ConsumedRecord:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers),
            timestamp_ms=record.timestamp,
        )

    def header(self, name: str) -> bytes | None:
        """The last value of header `name` (Kafka allows repeats), or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


RecordHandler = Callable[[ConsumedRecord], Awaitable[None]]
# Records of several partitions, in offset order within each; all or nothing.
BatchRecordHandler = Callable[[Sequence[ConsumedRecord]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential back-off with jitter (half fixed, half random) so replicas spread out."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, failures: int) -> float:
        capped = min(self.max_s, self.initial_s * 2.0 ** max(0, failures - 1))
        return capped / 2 + random.uniform(0, capped / 2)  # noqa: S311 — jitter, not crypto


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a transient handler failure is retried before the record is dead-lettered."""

    attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1 (the first call counts)")


@dataclass(frozen=True, slots=True)
class ConsumerTuning:
    """aiokafka group timings and the wrapper's own pacing; the defaults suit production."""

    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    max_poll_records: int = 200
    poll_timeout_ms: int = 1_000
    # The broker answers a fetch once this much data has gathered or this long has passed.
    # aiokafka's defaults (1 byte, 500 ms) answer each record at once, so a steady stream of a
    # few hundred records a second reaches the handler one or two per poll; a short wait with
    # a large minimum trades that much latency for fewer, fuller polls (see the alerts setting).
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500
    broker_backoff: Backoff = field(default_factory=Backoff)
    close_timeout_s: float = 10.0
    lag_refresh_s: float = 5.0
    # A crash redelivers at most this much handled work, which handlers dedupe anyway.
    commit_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ConsumerMetrics:
    records: Counter
    dead_letters: Counter
    handler_seconds: Histogram
    lag: Gauge
    broker_errors: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> ConsumerMetrics:
        return cls(
            records=Counter(
                "npsloop_consumer_records",
                "Handler outcomes: processed, dead_lettered, failed (will retry), dlq_unavailable.",
                ["group", "topic", "outcome"],
                registry=registry,
            ),
            dead_letters=Counter(
                "npsloop_consumer_dead_letters",
                "Records put on a dead-letter topic, by reason (permanent, retries_exhausted).",
                ["group", "topic", "reason"],
                registry=registry,
            ),
            handler_seconds=Histogram(
                "npsloop_consumer_handler_seconds",
                "Time spent in one handler call.",
                ["group", "topic"],
                registry=registry,
            ),
            lag=Gauge(
                "npsloop_consumer_lag",
                "Records behind the partition's end (highwater minus next offset to handle).",
                ["group", "topic", "partition"],
                registry=registry,
            ),
            broker_errors=Counter(
                "npsloop_consumer_broker_errors",
                "Kafka errors while connecting or polling (each one is followed by a back-off).",
                ["group"],
                registry=registry,
            ),
        )


# The consumer metrics of a registry (default: the global one), registered once.
consumer_metrics = PerRegistry(ConsumerMetrics.register)


class _Interrupted(Exception):
    """stop() was called or the record's partitions were revoked: leave it uncommitted."""


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(
        self,
        on_revoked: Callable[[Collection[TopicPartition]], Awaitable[None]],
        on_assigned: Callable[[Collection[TopicPartition]], None],
    ) -> None:
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self._on_assigned(assigned)


class KafkaEventConsumer:
    """Consumes `topics` as group `group_id` and calls `handler` once per record, at least once.

    `start()` returns at once and consumes in a background task that keeps reconnecting while
    the broker is away; `stop()` finishes the in-flight record, commits and leaves the group.
    See the module docstring for what is committed when.
    """

    def __init__(
        self,
        *,
        topics: Sequence[str],
        group_id: str,
        bootstrap_servers: str,
        handler: RecordHandler,
        batch_handler: BatchRecordHandler | None = None,
        client_id: str = "npsloop",
        retry: RetryPolicy | None = None,
        tuning: ConsumerTuning | None = None,
        dead_letters: DeadLetterPublisher | None = None,
        permanent_errors: tuple[type[Exception], ...] = DEFAULT_PERMANENT_ERRORS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not topics:
            raise ValueError("at least one topic is required")
        self._topics = list(topics)
        self._group_id = group_id
        self._bootstrap_servers = bootstrap_servers
        self._handler = handler
        self._batch_handler = batch_handler
        self._client_id = client_id
        self._retry = retry or RetryPolicy()
        self._tuning = tuning or ConsumerTuning()
        self._owns_dead_letters = dead_letters is None
        self._dead_letters = dead_letters or KafkaDeadLetterPublisher(
            bootstrap_servers, client_id=f"{client_id}-dlq"
        )
        self._permanent_errors = permanent_errors
        self._metrics = consumer_metrics(registry)

        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None  # the current AIOKafkaConsumer; the rebalance listener needs it
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()  # set by stop() and revocations to cut a back-off short
        self._assigned = asyncio.Event()
        # Held while a handler or a DLQ publish runs — never around getmany(), which a rebalance
        # blocks; holding it there would deadlock with the revocation callback (aiokafka docs).
        self._in_flight = asyncio.Lock()
        # Bumped on every revocation: records fetched under an older generation are stale.
        self._generation = 0
        self._committable: dict[TopicPartition, int] = {}
        self._next_offsets: dict[TopicPartition, int] = {}
        # Monotonic times, and that clock starts near boot: 0.0 would read "a moment ago" on a
        # machine up for less than an interval, and hold the first commit back until then.
        self._lag_refreshed_at = float("-inf")
        self._committed_at = float("-inf")  # the last commit after a poll

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin consuming in the background; returns without waiting for the broker."""
        if self._task is not None:
            raise RuntimeError("consumer already started")
        self._task = asyncio.create_task(self._run(), name=f"kafka-consumer-{self._group_id}")

    async def stop(self) -> None:
        """Finish the in-flight record, commit what was handled, leave the group, close.

        Records fetched but not yet handled stay uncommitted; the group redelivers them.
        """
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            await asyncio.wait({self._task})

    async def wait_until_assigned(self) -> None:
        """Return once the group has assigned this consumer its partitions."""
        await self._assigned.wait()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> KafkaEventConsumer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        try:
            consumer = await self._connect()
            try:
                await self._consume(consumer)
            finally:
                await self._close(consumer)
        except _Interrupted:
            pass
        except Exception:
            # A bug, not a broker problem (those are retried): `running` turns False for health.
            log.exception("consumer loop crashed", extra={"group": self._group_id})
        finally:
            if self._owns_dead_letters:
                await self._dead_letters.close()

    async def _connect(self) -> Any:
        """A started AIOKafkaConsumer, retrying with back-off until the broker answers."""
        failures = 0
        while True:
            consumer = self._new_consumer()
            try:
                await self._unless_stopping(consumer.start())
            except (KafkaError, OSError) as exc:
                failures += 1
                self._note_broker_error("connect", exc)
                await self._close_quietly(consumer)
                await self._back_off(self._tuning.broker_backoff.delay(failures))
            except BaseException:
                await self._close_quietly(consumer)
                raise
            else:
                return consumer

    def _new_consumer(self) -> Any:
        tuning = self._tuning
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,  # we commit after the handler; see module docstring
            auto_offset_reset="earliest",  # a new group must not skip what is already there
            session_timeout_ms=tuning.session_timeout_ms,
            heartbeat_interval_ms=tuning.heartbeat_interval_ms,
            max_poll_interval_ms=tuning.max_poll_interval_ms,
            max_poll_records=tuning.max_poll_records,
            fetch_min_bytes=tuning.fetch_min_bytes,
            fetch_max_wait_ms=tuning.fetch_max_wait_ms,
        )
        listener = _RebalanceListener(self._on_partitions_revoked, self._on_partitions_assigned)
        consumer.subscribe(self._topics, listener=listener)
        self._consumer = consumer
        return consumer

    async def _close(self, consumer: Any) -> None:
        """Commit what was handled, then leave the group; both bounded so stop() cannot hang."""
        try:
            async with asyncio.timeout(self._tuning.close_timeout_s):
                await self._commit(consumer)
        except TimeoutError:
            log.warning(
                "final commit timed out; handled records will be redelivered",
                extra={"group": self._group_id},
            )
        await self._close_quietly(consumer)
        self._consumer = None
        self._assigned.clear()

    async def _close_quietly(self, consumer: Any) -> None:
        try:
            async with asyncio.timeout(self._tuning.close_timeout_s):
                await consumer.stop()
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning(
                "consumer did not close cleanly: %s",
                type(exc).__name__,
                extra={"group": self._group_id},
            )

    # --- the loop -----------------------------------------------------------------------------

    async def _consume(self, consumer: Any) -> None:
        """Poll, handle, commit — until stop(). Broker errors cost a back-off, not the loop."""
        failures = 0
        while not self._stopping.is_set():
            try:
                batch = await self._unless_stopping(
                    consumer.getmany(timeout_ms=self._tuning.poll_timeout_ms)
                )
                failures = 0
                await self._handle_batch(consumer, batch)
                await self._unless_stopping(self._commit_when_due(consumer))
                await self._refresh_lag(consumer)
            except _Interrupted:
                continue  # stopping, or revoked: the revocation committed what was handled
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                failures += 1
                self._note_broker_error("poll", exc)
                await self._back_off(self._tuning.broker_backoff.delay(failures))

    async def _handle_batch(
        self, consumer: Any, batch: Mapping[TopicPartition, Sequence[Any]]
    ) -> None:
        """Handle each partition's records in order; a partition whose DLQ failed is rewound."""
        generation = self._generation
        together = self._batch_handler is not None and sum(map(len, batch.values())) > 1
        if together and await self._handled_together(batch, generation):
            return
        dlq_failures = 0
        for tp, records in batch.items():
            stuck_at = await self._handle_partition(consumer, records, generation)
            if stuck_at is not None:
                # Refetch from the unacknowledged record next time; nothing after it is committed.
                consumer.seek(tp, stuck_at)
                dlq_failures += 1
        if dlq_failures:
            await self._unless_stopping(self._commit(consumer))
            await self._back_off(self._tuning.broker_backoff.delay(dlq_failures), generation)

    async def _handled_together(
        self, batch: Mapping[TopicPartition, Sequence[Any]], generation: int
    ) -> bool:
        """Give the whole poll to the batch handler; True when it succeeded and every record is
        committable. On failure nothing is marked: the caller handles them one at a time."""
        batch_handler = self._batch_handler
        assert batch_handler is not None
        records = [ConsumedRecord.from_kafka(raw) for raws in batch.values() for raw in raws]
        async with self._in_flight:
            self._raise_if_interrupted(generation)
            started = time.perf_counter()
            try:
                await batch_handler(records)
            except Exception as exc:
                log.info(
                    "batch handler failed; handling its records one at a time",
                    extra={
                        "group": self._group_id,
                        "records": len(records),
                        "error": error_class_name(exc),
                    },
                )
                return False
            finally:
                elapsed = time.perf_counter() - started
                self._metrics.handler_seconds.labels(self._group_id, records[0].topic).observe(
                    elapsed
                )
            # Marked while still holding `_in_flight`, so a revocation waiting for it commits them.
            for record in records:
                self._mark_committable(record, "processed")
        return True

    async def _handle_partition(
        self, consumer: Any, records: Sequence[Any], generation: int
    ) -> int | None:
        """Handle records in order; the offset of the first one the DLQ refused, else None."""
        for raw in records:
            record = ConsumedRecord.from_kafka(raw)
            if not await self._handle_record(consumer, record, generation):
                self._raise_if_interrupted(generation)
                return record.offset
        return None

    async def _handle_record(self, consumer: Any, record: ConsumedRecord, generation: int) -> bool:
        """Call the handler until it succeeds or the record is dead-lettered.

        True when the record is committable; False when the DLQ did not acknowledge it.
        Raises `_Interrupted` (the record stays uncommitted) on stop or revocation.
        """
        failures = 0
        while True:
            async with self._in_flight:
                self._raise_if_interrupted(generation)
                error = await self._call_handler(record)
                if error is None:
                    self._mark_committable(record, "processed")
                    return True
                failures += 1
                permanent = isinstance(error, self._permanent_errors)
                if permanent or failures >= self._retry.attempts:
                    return await self._dead_letter(record, error, failures, permanent=permanent)
            self._log_failure("handler failed, will retry", record, error, failures)
            self._metrics.records.labels(self._group_id, record.topic, "failed").inc()
            await self._unless_stopping(self._commit(consumer))
            await self._back_off(self._retry.backoff.delay(failures), generation)

    async def _call_handler(self, record: ConsumedRecord) -> Exception | None:
        started = time.perf_counter()
        try:
            await self._handler(record)
        except Exception as exc:
            return exc
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.handler_seconds.labels(self._group_id, record.topic).observe(elapsed)
        return None

    async def _dead_letter(
        self, record: ConsumedRecord, error: Exception, attempts: int, *, permanent: bool
    ) -> bool:
        """Publish to `<topic>.dlq` and wait for the ack; only then is the record committable."""
        try:
            await self._dead_letters.publish(record, error, attempts)
        except Exception as exc:
            self._log_failure("dead-letter publish failed, record stays uncommitted", record, exc)
            self._metrics.records.labels(self._group_id, record.topic, "dlq_unavailable").inc()
            return False
        reason = "permanent" if permanent else "retries_exhausted"
        self._log_failure(f"dead-lettered ({reason})", record, error, attempts)
        self._metrics.dead_letters.labels(self._group_id, record.topic, reason).inc()
        self._mark_committable(record, "dead_lettered")
        return True

    def _mark_committable(self, record: ConsumedRecord, outcome: str) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self._committable[tp] = record.offset + 1
        self._next_offsets[tp] = record.offset + 1
        self._metrics.records.labels(self._group_id, record.topic, outcome).inc()

    # --- commits and rebalances ---------------------------------------------------------------

    async def _commit_when_due(self, consumer: Any) -> None:
        now = time.monotonic()
        if self._committable and now - self._committed_at >= self._tuning.commit_interval_s:
            self._committed_at = now
            await self._commit(consumer)

    async def _commit(self, consumer: Any) -> None:
        """Commit every committable offset of a partition still assigned; keep them on failure."""
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in self._committable.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError:
            log.warning(
                "commit refused after a rebalance; the new owner redelivers (handlers are"
                " idempotent)",
                extra={"group": self._group_id},
            )
            return
        except KafkaError as exc:
            log.warning("commit failed, will retry: %s", exc, extra={"group": self._group_id})
            return
        for tp, offset in offsets.items():
            if self._committable.get(tp) == offset:  # a newer offset may have arrived meanwhile
                del self._committable[tp]

    async def _on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        """Rebalance step 1: let the in-flight record finish, commit what was handled.

        Records fetched but not handled are abandoned (the generation bump tells the loop), so
        the partition's next owner starts right after the last committed record.
        """
        self._generation += 1
        self._wakeup.set()
        self._assigned.clear()
        async with self._in_flight:
            if self._consumer is not None:
                # On stop() the final commit in _close() takes over, bounded by close_timeout_s.
                with contextlib.suppress(_Interrupted):
                    await self._unless_stopping(self._commit(self._consumer))
            self._committable.clear()
        for tp in revoked:
            self._next_offsets.pop(tp, None)
            self._forget_lag(tp)
        if revoked:
            log.info("partitions revoked", extra={"group": self._group_id, "count": len(revoked)})

    def _on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        """Rebalance step 2: positions restart from the committed offsets (aiokafka does that)."""
        self._committable.clear()
        self._assigned.set()
        log.info("partitions assigned", extra={"group": self._group_id, "count": len(assigned)})

    # --- small helpers ------------------------------------------------------------------------

    async def _unless_stopping(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable`; on stop() cancel it and raise `_Interrupted` instead."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
                await asyncio.wait({work})
        if work.cancelled():
            raise _Interrupted
        return work.result()

    async def _back_off(self, delay_s: float, generation: int | None = None) -> None:
        """Sleep `delay_s`, cut short (raising `_Interrupted`) by stop() or a revocation."""
        self._raise_if_interrupted(generation)
        self._wakeup.clear()
        try:
            async with asyncio.timeout(delay_s):
                await self._wakeup.wait()
        except TimeoutError:
            return
        self._raise_if_interrupted(generation)

    def _raise_if_interrupted(self, generation: int | None) -> None:
        if self._stopping.is_set() or (generation is not None and generation != self._generation):
            raise _Interrupted

    async def _refresh_lag(self, consumer: Any) -> None:
        now = time.monotonic()
        if now - self._lag_refreshed_at < self._tuning.lag_refresh_s:
            return
        self._lag_refreshed_at = now
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:  # no fetch response for it yet
                continue
            next_offset = self._next_offsets.get(tp)
            if next_offset is None:
                next_offset = await consumer.position(tp)
            lag = max(0, highwater - next_offset)
            self._metrics.lag.labels(self._group_id, tp.topic, str(tp.partition)).set(lag)

    def _forget_lag(self, tp: TopicPartition) -> None:
        with contextlib.suppress(KeyError):  # never set for this partition
            self._metrics.lag.remove(self._group_id, tp.topic, str(tp.partition))

    def _note_broker_error(self, stage: str, exc: BaseException) -> None:
        self._metrics.broker_errors.labels(self._group_id).inc()
        log.warning(
            "kafka %s failed, backing off: %s",
            stage,
            describe_error(exc),
            extra={"group": self._group_id, "error_class": error_class_name(exc)},
        )

    def _log_failure(
        self, message: str, record: ConsumedRecord, error: BaseException, attempts: int = 0
    ) -> None:
        log.warning(
            "%s: %s",
            message,
            describe_error(error),
            extra={
                "group": self._group_id,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "attempts": attempts,
                "error_class": error_class_name(error),
            },
        )
