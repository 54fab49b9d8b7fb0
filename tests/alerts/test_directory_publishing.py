"""Directory changes reach `npsloop.accounts.v1` through the outbox relay, on real Kafka.

These tests commit for real, so they use their own migrated database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from deploy.local.infra import KafkaBrokerFactory
from npsloop_alerts.directory.models import OutboxMessage
from npsloop_alerts.directory.relay import DIRECTORY_OUTBOX
from npsloop_alerts.directory.repository import OUTBOX_RELAY_LOCK_KEY
from npsloop_alerts.directory.schemas import AccountIn, PersonIn
from npsloop_alerts.directory.service import DirectoryService
from npsloop_alerts.kafka import KafkaConnection
from npsloop_alerts.outbox import OutboxRelay
from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.contracts import ACCOUNTS_TOPIC, AccountUpserted
from npsloop_shared.db import SessionMaker, create_engine, create_sessionmaker, session_scope
from npsloop_shared.kafka.producer import KafkaProducer
from npsloop_shared.kafka.topics import compacted_topic, ensure_topics, event_topic
from tests.alerts.conftest import ADMIN_TOKEN, CreateDatabase, running_app, until

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@dataclass(frozen=True)
class Record:
    key: str
    value: bytes | None
    headers: dict[str, str]
    partition: int


@pytest.fixture(scope="module")
async def publishing_database_url(create_migrated_database: CreateDatabase) -> str:
    return await create_migrated_database()


@pytest.fixture
async def sessionmaker(publishing_database_url: str) -> AsyncIterator[SessionMaker]:
    engine = create_engine(publishing_database_url, application_name="test", pool_size=2)
    yield create_sessionmaker(engine)
    await engine.dispose()


@contextlib.asynccontextmanager
async def tail(
    bootstrap: str, topic: str = ACCOUNTS_TOPIC, *, from_beginning: bool = False
) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less consumer positioned at the current end (or the beginning) of every partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_ids(bootstrap, topic)]
        consumer.assign(partitions)
        positions = consumer.beginning_offsets if from_beginning else consumer.end_offsets
        for partition, offset in (await positions(partitions)).items():
            consumer.seek(partition, offset)
        yield consumer
    finally:
        await consumer.stop()


async def partition_ids(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    ids = sorted(partition["partition"] for partition in description["partitions"])
    assert ids, f"{topic} has no partitions"
    return ids


async def records_for(consumer: AIOKafkaConsumer, key: str, count: int) -> list[Record]:
    found: list[Record] = []
    async with asyncio.timeout(30):
        while len(found) < count:
            found += await records_for_batch(consumer, key)
    return found


async def read_to_end(consumer: AIOKafkaConsumer, key: str) -> list[Record]:
    """Every record for `key` from the current positions up to the partitions' end offsets."""
    ends = await consumer.end_offsets(list(consumer.assignment()))
    found: list[Record] = []
    async with asyncio.timeout(30):
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            found += await records_for_batch(consumer, key)
    return found


async def records_for_batch(consumer: AIOKafkaConsumer, key: str) -> list[Record]:
    batches = await consumer.getmany(timeout_ms=500)
    return [
        Record(
            key=m.key.decode(),
            value=m.value,
            headers={k: v.decode() for k, v in m.headers},
            partition=m.partition,
        )
        for messages in batches.values()
        for m in messages
        if m.key == key.encode()
    ]


async def ensure_accounts_topic(bootstrap: str) -> None:
    await ensure_topics(bootstrap, [compacted_topic(ACCOUNTS_TOPIC)])


def settings_for(database_url: str, bootstrap: str) -> AlertsSettings:
    return AlertsSettings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        admin_token=ADMIN_TOKEN,
        outbox_poll_interval_seconds=0.05,
        kafka_send_timeout_seconds=3,
    )


async def test_directory_changes_are_published_in_order_with_a_tombstone_on_delete(
    publishing_database_url: str,
    sessionmaker: SessionMaker,
    kafka_bootstrap: str,
    unique_name: str,
) -> None:
    account_id, owner_id = f"acct-{unique_name}", f"owner-{unique_name}"
    await ensure_accounts_topic(kafka_bootstrap)
    settings = settings_for(publishing_database_url, kafka_bootstrap)

    async with running_app(settings) as app, tail(kafka_bootstrap) as consumer:
        await until(lambda: _status(app, "/readyz", 200), "the app never became ready (DB + Kafka)")
        owner = {"name": "Ana", "email": "ana@example.com", "locale": "pt-BR"}
        assert (await app.put(f"/v1/people/{owner_id}", json=owner)).status_code == 201
        account = {"name": "Acme", "segment": "wholesale", "owner_id": owner_id}
        assert (await app.put(f"/v1/accounts/{account_id}", json=account)).status_code == 201
        renamed = {**owner, "name": "Ana Souza"}
        assert (await app.put(f"/v1/people/{owner_id}", json=renamed)).status_code == 200
        assert (await app.delete(f"/v1/accounts/{account_id}")).status_code == 204

        created, contact_changed, deleted = await records_for(consumer, account_id, 3)

        health = (await app.get("/healthz")).json()
        metrics = (await app.get("/metrics")).text

    first = AccountUpserted.model_validate_json(created.value or b"")
    second = AccountUpserted.model_validate_json(contact_changed.value or b"")
    assert (first.version, first.segment, first.owner and first.owner.name) == (
        1,
        "wholesale",
        "Ana",
    )
    assert (second.version, second.owner and second.owner.name) == (2, "Ana Souza")
    assert deleted.value is None
    assert created.headers["ce_type"] == "io.npsloop.account.upserted.v1"
    assert deleted.headers["ce_type"] == "io.npsloop.account.deleted.v1"
    assert len({r.headers["ce_id"] for r in (created, contact_changed, deleted)}) == 3
    assert created.partition == contact_changed.partition == deleted.partition
    assert health["checks"]["kafka"] == health["checks"]["directory-outbox-relay"] == "ok"
    assert "npsloop_alerts_directory_events_published_total" in metrics
    async with session_scope(sessionmaker) as session:
        pending = await session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.key == account_id, OutboxMessage.published_at.is_(None)
            )
        )
        assert list(pending) == []


async def _status(client: httpx.AsyncClient, path: str, expected: int) -> bool:
    try:
        return (await client.get(path)).status_code == expected
    except httpx.HTTPError:
        return False


async def test_only_one_relay_publishes_at_a_time(
    sessionmaker: SessionMaker, unique_name: str
) -> None:
    async with session_scope(sessionmaker) as session:
        await DirectoryService(session).upsert_account(f"lock-{unique_name}", AccountIn(name="L"))
    relay = OutboxRelay(DIRECTORY_OUTBOX, sessionmaker, _unconnected_kafka())

    async with sessionmaker() as other_replica, other_replica.begin():
        await other_replica.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": OUTBOX_RELAY_LOCK_KEY}
        )
        published = await relay.publish_batch()

    assert published == 0
    assert await _pending(sessionmaker) >= 1


def _unconnected_kafka() -> KafkaConnection:
    producer = KafkaProducer("127.0.0.1:9")
    return KafkaConnection("127.0.0.1:9", producer, [])


async def test_changes_made_while_kafka_is_down_are_published_when_it_returns(
    sessionmaker: SessionMaker,
    kafka_broker_factory: KafkaBrokerFactory,
    unique_name: str,
) -> None:
    broker = kafka_broker_factory()
    bootstrap = broker.bootstrap_servers
    producer = KafkaProducer(bootstrap, ack_timeout=2)
    kafka = KafkaConnection(bootstrap, producer, [compacted_topic(ACCOUNTS_TOPIC, partitions=1)])
    relay = OutboxRelay(
        DIRECTORY_OUTBOX, sessionmaker, kafka, poll_interval=0.05, retention=timedelta(days=1)
    )
    await kafka.start()
    await relay.start()
    try:
        await asyncio.wait_for(kafka.wait_connected(), 60)
        await _drain(sessionmaker)
        await broker.stop_async()

        account_id = f"outage-{unique_name}"
        async with session_scope(sessionmaker) as session:
            directory = DirectoryService(session)
            await directory.upsert_person(f"p-{unique_name}", PersonIn(name="P"))
            await directory.upsert_account(account_id, AccountIn(name="During the outage"))
        await asyncio.sleep(3)  # several relay passes fail meanwhile
        assert await _pending(sessionmaker) >= 1
        assert relay.healthy()

        await broker.start_async()
        await until(lambda: _nothing_pending(sessionmaker), "outbox not drained", within=90)
        async with tail(broker.bootstrap_servers, from_beginning=True) as consumer:
            records = await read_to_end(consumer, account_id)
        # At least once: a send that timed out during the outage may also have been written;
        # every copy carries the same ce_id, so consumers dedupe it.
        assert len({record.headers["ce_id"] for record in records}) == 1
        event = AccountUpserted.model_validate_json(records[0].value or b"")
        assert event.name == "During the outage"
    finally:
        await relay.stop()
        await kafka.stop()


async def _pending(sessionmaker: SessionMaker) -> int:
    """Outbox rows committed but not yet published (what the relay still owes Kafka)."""
    async with session_scope(sessionmaker) as session:
        query = select(func.count()).where(OutboxMessage.published_at.is_(None))
        return await session.scalar(query) or 0


async def _nothing_pending(sessionmaker: SessionMaker) -> bool:
    return await _pending(sessionmaker) == 0


async def _drain(sessionmaker: SessionMaker) -> None:
    await until(lambda: _nothing_pending(sessionmaker), "earlier changes not published", 60)


def _message(topic: str, key: str, n: int, published_at: datetime | None) -> OutboxMessage:
    return OutboxMessage(
        topic=topic,
        key=key,
        value=f'{{"n": {n}}}'.encode(),
        headers=[["ce_id", f"{key}-{n}"]],
        published_at=published_at,
    )


async def test_relay_publishes_pending_rows_then_purges_those_published_before_the_retention(
    create_migrated_database: CreateDatabase, kafka_bootstrap: str, unique_name: str
) -> None:
    # Its own database: the relay publishes every pending row, so no other test's rows here.
    engine = create_engine(await create_migrated_database(), application_name="test", pool_size=2)
    sessionmaker = create_sessionmaker(engine)
    topic, key = f"directory-{unique_name}", f"acct-{unique_name}"
    now = datetime.now(UTC)
    async with session_scope(sessionmaker) as session:
        session.add(_message(topic, key, 0, published_at=now - timedelta(days=8)))
        session.add(_message(topic, key, 1, published_at=now - timedelta(days=6)))
        session.add_all([_message(topic, key, 2, None), _message(topic, key, 3, None)])
    published_before = _directory_published_total()
    kafka = KafkaConnection(
        kafka_bootstrap, KafkaProducer(kafka_bootstrap), [event_topic(topic, partitions=1)]
    )
    relay = OutboxRelay(
        DIRECTORY_OUTBOX, sessionmaker, kafka, poll_interval=0.05, retention=timedelta(days=7)
    )
    await kafka.start()
    await relay.start()
    try:
        await until(lambda: _nothing_pending(sessionmaker), "directory outbox not drained")
        await until(lambda: _outbox_holds(sessionmaker, 3), "old published row not purged")
        assert relay.healthy()
        async with tail(kafka_bootstrap, topic, from_beginning=True) as consumer:
            records = await read_to_end(consumer, key)
        async with session_scope(sessionmaker) as session:
            kept = list(await session.scalars(select(OutboxMessage.value).order_by("id")))
    finally:
        await relay.stop()
        await kafka.stop()
        await engine.dispose()

    # Only the pending rows went out, in id order; only the row published 8 days ago is gone.
    assert kept == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert [(record.value, record.headers["ce_id"]) for record in records] == [
        (b'{"n": 2}', f"{key}-2"),
        (b'{"n": 3}', f"{key}-3"),
    ]
    assert _directory_published_total() - published_before == 2
    assert REGISTRY.get_sample_value("npsloop_alerts_directory_outbox_pending") == 0


async def _outbox_holds(sessionmaker: SessionMaker, rows: int) -> bool:
    async with session_scope(sessionmaker) as session:
        return await session.scalar(select(func.count()).select_from(OutboxMessage)) == rows


def _directory_published_total() -> float:
    return REGISTRY.get_sample_value("npsloop_alerts_directory_events_published_total") or 0.0
