"""Placing records: the Java-compatible partitioner, and whole batches built for one call.

`publish_many` packs its records into batches of its own, one per partition (aiokafka's public
`create_batch` / `send_batch`), so a 500-response request costs a handful of futures rather than
500 `send` calls (about ten microseconds of Python each). Records are partitioned exactly as
aiokafka's `send` would (murmur2 of the key): a key keeps its partition whichever way it is
published, and within one call its order.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka.errors import UnknownTopicOrPartitionError
from aiokafka.partitioner import murmur2

# A list, not any sequence: aiokafka's C record builder accepts nothing else.
KafkaHeaders = list[tuple[str, bytes]]


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
class SubmittedBatch:
    """A batch handed to aiokafka, and which of the caller's records are in it."""

    delivery: asyncio.Future[Any]  # resolves to the batch's RecordMetadata (its base offset)
    members: list[tuple[int, int]] = field(default_factory=list)  # (record index, offset in batch)


async def partition_lists(producer: Any, topic: str) -> tuple[list[int], list[int]]:
    """All and available partitions of `topic`, as aiokafka's own `send` lists them; waits
    for the topic's metadata when it is not known yet (the caller bounds the wait)."""
    cluster = producer.client.cluster
    if not cluster.partitions_for_topic(topic):
        await producer.partitions_for(topic)
    partitions = cluster.partitions_for_topic(topic)
    if not partitions:
        raise UnknownTopicOrPartitionError(topic)
    return list(partitions), list(cluster.available_partitions_for_topic(topic) or ())


class PartitionGates:
    """One lock per partition, held while a batch is handed to aiokafka.

    aiokafka's `send_batch` waits until the partition's queued batch has gone, and recounts
    its timeout wrongly when it has to wait several times (it subtracts the total elapsed time
    on every round), so concurrent hand-overs to one partition time out early. Taking turns
    makes each wait once.
    """

    def __init__(self) -> None:
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    def __call__(self, slot: tuple[str, int]) -> asyncio.Lock:
        lock = self._locks.get(slot)
        if lock is None:
            lock = self._locks[slot] = asyncio.Lock()
        return lock


async def submit_in_batches(
    producer: Any, records: Sequence[OutgoingRecord], gates: PartitionGates
) -> list[SubmittedBatch]:
    """Pack `records` into per-partition batches and hand each to aiokafka when it is full
    or all records are placed. Every batch is closed before it is handed over: nothing else may
    join a batch whose members we index (and the idempotent producer numbers its records)."""
    lists: dict[str, tuple[list[int], list[int]]] = {}
    open_batches: dict[tuple[str, int], tuple[Any, list[tuple[int, int]]]] = {}
    submitted: list[SubmittedBatch] = []
    for index, record in enumerate(records):
        topic_lists = lists.get(record.topic)
        if topic_lists is None:
            topic_lists = lists[record.topic] = await partition_lists(producer, record.topic)
        slot = (record.topic, partition_for(record.key, *topic_lists))
        builder, members = open_batches.get(slot) or open_batches.setdefault(
            slot, (producer.create_batch(), [])
        )
        metadata = builder.append(
            timestamp=None, key=record.key, value=record.value, headers=record.headers
        )
        if metadata is None:  # full: send it and start the next batch of this partition
            submitted.append(await _submit(producer, slot, builder, members, gates))
            builder, members = open_batches[slot] = (producer.create_batch(), [])
            # The first record always fits an empty batch, whatever its size.
            metadata = builder.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers
            )
        members.append((index, metadata.offset))
    for slot, (builder, members) in open_batches.items():
        submitted.append(await _submit(producer, slot, builder, members, gates))
    return submitted


async def _submit(
    producer: Any,
    slot: tuple[str, int],
    builder: Any,
    members: list[tuple[int, int]],
    gates: PartitionGates,
) -> SubmittedBatch:
    builder.close()
    async with gates(slot):
        delivery = await producer.send_batch(builder, slot[0], partition=slot[1])
    return SubmittedBatch(delivery, members)
