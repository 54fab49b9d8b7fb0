"""The producer wrapper and topic creation against a real broker."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel

from deploy.local.infra import KafkaBrokerFactory
from npsloop_shared.kafka.batching import partition_for
from npsloop_shared.kafka.producer import (
    Acked,
    BrokerUnavailable,
    KafkaProducer,
    OutgoingRecord,
    encode_value,
)
from npsloop_shared.kafka.topics import (
    TopicCreationFailed,
    compacted_topic,
    ensure_topics,
    event_topic,
    with_dead_letter,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + 15
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


@pytest.fixture
async def topic(kafka_bootstrap: str, unique_name: str) -> str:
    name = f"producer.{unique_name}"
    await ensure_topics(kafka_bootstrap, [event_topic(name, partitions=4)])
    return name


@pytest.fixture
async def producer(kafka_bootstrap: str) -> Any:
    producer = KafkaProducer(kafka_bootstrap, ack_timeout=5.0)
    await producer.start()
    yield producer
    await producer.stop()


async def test_publish_returns_only_once_acked_and_the_record_is_there(
    producer: KafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    acked = await producer.publish(
        topic, {"hello": "world"}, key="acct-1", headers=[("ce_id", b"e-1")]
    )

    [record] = await consume_all(kafka_bootstrap, topic, 4, 1)
    assert (record.partition, record.offset) == (acked.partition, acked.offset)
    assert record.key == b"acct-1"
    assert orjson.loads(record.value) == {"hello": "world"}
    assert record.headers == (("ce_id", b"e-1"),)


async def test_publish_many_acks_every_record_in_order_per_key(
    producer: KafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    records = [
        OutgoingRecord(topic, f"v{i}".encode(), f"k{i % 5}".encode(), [("n", str(i).encode())])
        for i in range(300)
    ]

    acked = await producer.publish_many(records)

    assert len(acked) == 300
    assert len({(a.partition, a.offset) for a in acked}) == 300
    landed = await consume_all(kafka_bootstrap, topic, 4, 300)
    by_position = {(r.partition, r.offset): r for r in landed}
    for record, ack in zip(records, acked, strict=True):
        assert by_position[(ack.partition, ack.offset)].value == record.value
    for key in {r.key for r in records}:
        mine = [a for r, a in zip(records, acked, strict=True) if r.key == key]
        assert len({a.partition for a in mine}) == 1
        assert [a.offset for a in mine] == sorted(a.offset for a in mine)


async def test_concurrent_single_publishes_share_batches_and_all_land(
    producer: KafkaProducer, topic: str, kafka_bootstrap: str
) -> None:
    acked = await asyncio.gather(
        *(
            producer.publish_record(
                OutgoingRecord(topic, f"c{i}".encode(), f"k{i % 7}".encode(), [])
            )
            for i in range(500)
        )
    )

    assert len({(a.partition, a.offset) for a in acked}) == 500
    landed = await consume_all(kafka_bootstrap, topic, 4, 500)
    # Each caller is told where its own record is.
    by_position = {(r.partition, r.offset): r.value for r in landed}
    assert [by_position[(a.partition, a.offset)] for a in acked] == [
        f"c{i}".encode() for i in range(500)
    ]


async def test_with_linger_a_lone_record_waits_for_company_and_goes_with_it(
    kafka_bootstrap: str, topic: str
) -> None:
    producer = KafkaProducer(kafka_bootstrap, ack_timeout=5.0, linger_ms=300)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        await producer.publish_record(OutgoingRecord(topic, b"warm", b"k", []))  # metadata
        started = loop.time()

        async def publish(value: bytes) -> tuple[Acked, float]:
            acked = await producer.publish_record(OutgoingRecord(topic, value, b"k", []))
            return acked, loop.time()

        first = asyncio.create_task(publish(b"first"))
        await asyncio.sleep(0.1)  # well inside the linger: joins the first record's batch
        (first_ack, first_at), (second_ack, second_at) = await asyncio.gather(
            first, publish(b"second")
        )
    finally:
        await producer.stop()

    assert first_at - started >= 0.3  # the lone record waited the linger out
    assert abs(second_at - first_at) < 0.05  # one produce request acknowledged both
    assert (second_ack.partition, second_ack.offset) == (first_ack.partition, first_ack.offset + 1)


async def test_keys_go_where_the_java_default_partitioner_puts_them(
    producer: KafkaProducer, topic: str
) -> None:
    keys = [f"account-{i}".encode() for i in range(40)]

    single = [await producer.publish(topic, b"x", key=key) for key in keys]
    many = await producer.publish_many([OutgoingRecord(topic, b"y", key, []) for key in keys])

    reference = DefaultPartitioner()
    for key, one, batched in zip(keys, single, many, strict=True):
        assert one.partition == batched.partition == reference(key, [0, 1, 2, 3], [0, 1, 2, 3])


def test_partition_for_is_the_default_partitioner() -> None:
    reference = DefaultPartitioner()
    for i in range(2000):
        key = os.urandom(i % 40 + 1)
        partitions = list(range(i % 13 + 1))
        assert partition_for(key, partitions, partitions) == reference(key, partitions, partitions)


async def test_not_started_is_unavailable(kafka_bootstrap: str, topic: str) -> None:
    producer = KafkaProducer(kafka_bootstrap, retry_after_seconds=7)

    with pytest.raises(BrokerUnavailable) as raised:
        await producer.publish(topic, b"x")

    assert raised.value.status == 503
    assert raised.value.headers == {"Retry-After": "7"}
    assert await producer.ping() is False


async def test_start_without_a_broker_is_unavailable() -> None:
    producer = KafkaProducer("127.0.0.1:9", ack_timeout=1.0)

    with pytest.raises(BrokerUnavailable, match="cannot connect"):
        await producer.start()
    assert not producer.is_running


async def test_stopped_broker_times_out_then_the_same_producer_recovers(
    kafka_broker_factory: KafkaBrokerFactory, unique_name: str
) -> None:
    broker = kafka_broker_factory()
    name = f"outage.{unique_name}"
    await ensure_topics(broker.bootstrap_servers, [event_topic(name, partitions=2)])
    producer = KafkaProducer(broker.bootstrap_servers, ack_timeout=1.0)
    await producer.start()
    try:
        await producer.publish(name, b"before", key="k")
        assert await producer.ping() is True

        await broker.stop_async()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="did not acknowledge within 1 s"):
            await producer.publish(name, b"during", key="k")
        with pytest.raises(BrokerUnavailable):
            await producer.publish_many([OutgoingRecord(name, b"d", b"k", [])] * 3)
        assert time.monotonic() - started < 5
        assert await producer.ping(within_seconds=0.5) is False

        await broker.start_async()
        deadline = time.monotonic() + 60
        while True:
            try:
                await producer.publish(name, b"after", key="k")
                break
            except BrokerUnavailable:
                assert time.monotonic() < deadline, "producer did not recover"
                await asyncio.sleep(0.5)
        landed = await consume_all(broker.bootstrap_servers, name, 2, 2)
        assert {b"before", b"after"} <= {r.value for r in landed}
    finally:
        await producer.stop(flush_seconds=2)


async def test_a_closed_underlying_producer_is_replaced(
    producer: KafkaProducer, topic: str
) -> None:
    """Errors that leave aiokafka's producer unusable make the wrapper build a new one."""
    await producer._producer.stop()  # the failure being injected: aiokafka closed under us

    with pytest.raises(BrokerUnavailable, match="not connected"):
        await producer.publish(topic, b"x")
    deadline = time.monotonic() + 30
    while True:
        try:
            acked = await producer.publish(topic, b"after", key="k")
            break
        except BrokerUnavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert acked.offset >= 0


class Model(BaseModel):
    when: str
    n: int


def test_encode_value() -> None:
    assert encode_value(b"raw") == b"raw"
    assert orjson.loads(encode_value({"a": 1})) == {"a": 1}
    assert orjson.loads(encode_value(Model(when="now", n=2))) == {"when": "now", "n": 2}


async def describe(bootstrap: str, name: str) -> tuple[int, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [topic] = await admin.describe_topics([name])
        [configs] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    values = {entry[0]: entry[1] for entry in configs.resources[0][4]}
    return len(topic["partitions"]), values


async def test_ensure_topics_creates_topic_and_dlq_once(
    kafka_bootstrap: str, unique_name: str
) -> None:
    from datetime import timedelta

    specs = with_dead_letter(
        event_topic(f"ensure.{unique_name}", partitions=3, retention=timedelta(days=2))
    )

    created = await ensure_topics(kafka_bootstrap, specs)
    again = await ensure_topics(kafka_bootstrap, specs)

    assert created == [f"ensure.{unique_name}", f"ensure.{unique_name}.dlq"]
    assert again == []
    for name in created:
        partitions, configs = await describe(kafka_bootstrap, name)
        assert partitions == 3
        assert configs["retention.ms"] == str(2 * 24 * 3600 * 1000)


async def test_compacted_topic(kafka_bootstrap: str, unique_name: str) -> None:
    name = f"accounts.{unique_name}"

    await ensure_topics(kafka_bootstrap, [compacted_topic(name, partitions=2)])

    partitions, configs = await describe(kafka_bootstrap, name)
    assert partitions == 2
    assert configs["cleanup.policy"] == "compact"


async def test_impossible_topic_is_refused_with_the_reason(
    kafka_bootstrap: str, unique_name: str
) -> None:
    spec = event_topic(f"rf3.{unique_name}", replication_factor=3)

    with pytest.raises(TopicCreationFailed, match=f"rf3.{unique_name}"):
        await ensure_topics(kafka_bootstrap, [spec])
