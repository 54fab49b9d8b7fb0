"""Concurrent publishes share per-partition batches: one future per batch, not per record.

aiokafka spends a few hundred microseconds of Python per produce request and about ten per
`send`; a busy ingest replica publishes thousands of single records a second, so both add up.
Here every caller appends its record to its partition's *pending* batch (aiokafka's public
`create_batch`), and waits on that batch. A partition has at most one pending batch; it is sealed
and handed to aiokafka (`send_batch`) at the end of the event-loop tick when nothing of the
partition is in flight, otherwise as soon as the batch in flight is acknowledged (or when it is
full). So while one batch travels, the next fills up — as aiokafka's own accumulator does, minus
its per-record futures. The batch's single ack releases every caller waiting on it, each
computing its record's offset from the batch's base offset.

A batch is sealed *before* aiokafka sees it: the idempotent producer numbers records when it
drains a batch, and a record added after that would break the sequence.

Records are partitioned exactly as aiokafka's `send` would (murmur2 of the key), so a key keeps
its partition and, within one call, its order.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from aiokafka.errors import KafkaTimeoutError, ProducerClosed, UnknownTopicOrPartitionError
from aiokafka.partitioner import murmur2

# A list, not any sequence: aiokafka's C record builder accepts nothing else.
KafkaHeaders = list[tuple[str, bytes]]

# Bytes of sealed batches not yet acknowledged, across all partitions. Beyond it (a stalled
# broker under load) a new record is refused at once instead of piling up in memory.
DEFAULT_MAX_UNACKED_BYTES: Final = 64 * 1024 * 1024


class OutgoingRecord(NamedTuple):
    """A record to publish; `value` is bytes already (see `producer.encode_value`).

    A named tuple rather than a dataclass: ingest builds tens of thousands a second.
    """

    topic: str
    value: bytes | None
    key: bytes | None
    headers: KafkaHeaders


@functools.lru_cache(maxsize=65_536)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's (and Java's) default partitioner, with the murmur2 of recent keys cached.

    The pure-Python murmur2 costs more than the rest of placing a record; keys (account ids)
    repeat.
    """
    if key is None:
        return random.choice(available or all_partitions)  # noqa: S311 - load spreading only
    return all_partitions[_key_hash(key) % len(all_partitions)]


@dataclass(slots=True)
class OpenBatch:
    """Records of one partition that travel together, and the callers waiting for their ack."""

    builder: Any  # aiokafka BatchBuilder
    waiters: list[asyncio.Future[Any]] = field(default_factory=list)
    failed: bool = False
    expiry: asyncio.TimerHandle | None = None

    def join(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """A future that gets the batch's RecordMetadata (its base offset) or its failure."""
        waiter: asyncio.Future[Any] = loop.create_future()
        self.waiters.append(waiter)
        return waiter

    def succeed(self, metadata: Any) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(metadata)

    def fail(self, error_for: Callable[[], BaseException]) -> None:
        """Fail every waiter still waiting, each with an exception of its own, and take no more."""
        self.failed = True
        self.builder.close()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(error_for())


@dataclass(slots=True)
class _Partition:
    pending: OpenBatch | None = None  # still taking records
    flush_scheduled: bool = False
    in_flight: int = 0  # sealed batches handed to aiokafka and not yet acknowledged


class BatchAppender:
    """The pending and in-flight batches of each partition, for one aiokafka producer."""

    def __init__(
        self,
        producer: Any,
        *,
        ack_timeout: float,
        linger_ms: int = 0,
        max_unacked_bytes: int = DEFAULT_MAX_UNACKED_BYTES,
    ) -> None:
        self._producer = producer
        self._ack_timeout = ack_timeout
        self._linger = linger_ms / 1000
        self._max_unacked_bytes = max_unacked_bytes
        self._unacked_bytes = 0
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._deliveries: set[asyncio.Task[None]] = set()  # strong refs until each ends
        self._loop = asyncio.get_running_loop()

    async def append(self, record: OutgoingRecord) -> tuple[OpenBatch, int]:
        """Put `record` in its partition's pending batch; returns the batch and the record's
        offset within it. The caller then awaits a future `join`ed to that batch: it resolves
        to the batch's RecordMetadata, or fails with the delivery's exception or a
        `TimeoutError` at most `ack_timeout` after the batch opened."""
        lists = await self._partition_lists(record.topic)
        return self._append(record, (record.topic, partition_for(record.key, *lists)))

    async def append_many(self, records: Sequence[OutgoingRecord]) -> list[tuple[OpenBatch, int]]:
        """`append` for each record, in order, looking each topic's partitions up once."""
        lists_by_topic: dict[str, tuple[list[int], list[int]]] = {}
        placed = []
        for record in records:
            lists = lists_by_topic.get(record.topic)
            if lists is None:
                lists = lists_by_topic[record.topic] = await self._partition_lists(record.topic)
            placed.append(self._append(record, (record.topic, partition_for(record.key, *lists))))
        return placed

    def _append(self, record: OutgoingRecord, slot: tuple[str, int]) -> tuple[OpenBatch, int]:
        state = self._partitions.get(slot)
        if state is None:
            state = self._partitions[slot] = _Partition()
        batch = state.pending
        if batch is not None:
            metadata = batch.builder.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers
            )
            if metadata is not None:
                return batch, metadata.offset
            if not batch.failed:  # full: it goes now, as it is
                self._flush(slot, state)
        if self._unacked_bytes > self._max_unacked_bytes:
            raise KafkaTimeoutError("too much data waiting for Kafka's acknowledgement")
        batch = state.pending = self._open_batch()
        # The first record always fits an empty batch, whatever its size.
        metadata = batch.builder.append(
            timestamp=None, key=record.key, value=record.value, headers=record.headers
        )
        if state.in_flight == 0 and not state.flush_scheduled:
            # Everything appended during this tick of the event loop (or the linger) travels
            # together.
            state.flush_scheduled = True
            if self._linger:
                self._loop.call_later(self._linger, self._scheduled_flush, slot, state)
            else:
                self._loop.call_soon(self._scheduled_flush, slot, state)
        return batch, metadata.offset

    def close(self) -> None:
        """Stop the deliveries still running; their waiters fail with `ProducerClosed`."""
        for delivery in list(self._deliveries):
            delivery.cancel()
        for state in self._partitions.values():
            if state.pending is not None:
                state.pending.fail(ProducerClosed)

    async def _partition_lists(self, topic: str) -> tuple[list[int], list[int]]:
        """All and available partitions of `topic`, as aiokafka's own `send` lists them."""
        lists = self._known_partition_lists(topic)
        if lists is None:
            # Unknown topic: wait for its metadata. aiokafka gives up after request_timeout_ms
            # while it is connected, but waits forever once its client is closed.
            async with asyncio.timeout(self._ack_timeout):
                await self._producer.partitions_for(topic)
            lists = self._known_partition_lists(topic)
            if lists is None:
                raise UnknownTopicOrPartitionError(topic)
        return lists

    def _known_partition_lists(self, topic: str) -> tuple[list[int], list[int]] | None:
        cluster = self._producer.client.cluster
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            return None
        return list(partitions), list(cluster.available_partitions_for_topic(topic) or ())

    def _open_batch(self) -> OpenBatch:
        batch = OpenBatch(self._producer.create_batch())
        # The clock starts when the batch opens, so nobody waits longer than `ack_timeout`,
        # however long the batch waited for its turn.
        batch.expiry = self._loop.call_later(self._ack_timeout, batch.fail, TimeoutError)
        return batch

    def _scheduled_flush(self, slot: tuple[str, int], state: _Partition) -> None:
        state.flush_scheduled = False
        self._flush(slot, state)

    def _flush(self, slot: tuple[str, int], state: _Partition) -> None:
        batch, state.pending = state.pending, None
        if batch is None or batch.failed:
            return
        batch.builder.close()  # sealed: see the module docstring
        state.in_flight += 1
        size = batch.builder.size()
        self._unacked_bytes += size
        delivery = self._loop.create_task(self._deliver(slot, state, batch, size))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    async def _deliver(
        self, slot: tuple[str, int], state: _Partition, batch: OpenBatch, size: int
    ) -> None:
        try:
            delivery = await self._producer.send_batch(batch.builder, slot[0], partition=slot[1])
            metadata = await delivery
        except asyncio.CancelledError:
            batch.fail(ProducerClosed)  # the producer is being discarded
            raise
        except Exception as exc:  # every failure is reported to every waiter
            error = exc
            batch.fail(lambda: copy.copy(error))
        else:
            batch.succeed(metadata)
        finally:
            if batch.expiry is not None:
                batch.expiry.cancel()
            state.in_flight -= 1
            self._unacked_bytes -= size
            if state.in_flight == 0 and not state.flush_scheduled:
                self._flush(slot, state)  # what gathered while this one travelled
