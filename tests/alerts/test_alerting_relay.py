"""Alert lifecycle events reach their topic through the alert outbox relay, on real Kafka.

The relay commits for real, so these tests use their own migrated database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from npsloop_alerts.alerting.metrics import alerting_metrics
from npsloop_alerts.alerting.models import AlertOutboxMessage, ProcessedEvent
from npsloop_alerts.alerting.relay import AlertOutboxRelay
from npsloop_alerts.kafka import KafkaConnection
from npsloop_shared.db import SessionMaker, create_engine, create_sessionmaker, session_scope
from npsloop_shared.kafka.producer import KafkaProducer
from npsloop_shared.kafka.topics import event_topic
from tests.alerts.conftest import CreateDatabase, until

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def sessionmaker(create_migrated_database: CreateDatabase) -> AsyncIterator[SessionMaker]:
    engine = create_engine(await create_migrated_database(), application_name="test", pool_size=2)
    yield create_sessionmaker(engine)
    await engine.dispose()


def _event(
    topic: str, key: str, n: int, published_at: datetime | None = None
) -> AlertOutboxMessage:
    return AlertOutboxMessage(
        topic=topic,
        key=key,
        value=f'{{"n": {n}}}'.encode(),
        headers=[["ce_id", f"{key}-{n}"], ["ce_type", "io.npsloop.alert.created.v1"]],
        published_at=published_at,
    )


async def _consume(
    bootstrap: str, topic: str, count: int
) -> list[tuple[bytes, bytes, dict[str, str]]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[tuple[bytes, bytes, dict[str, str]]] = []
    try:
        async with asyncio.timeout(30):
            while len(found) < count:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    found += [
                        (m.key, m.value, {k: v.decode() for k, v in m.headers}) for m in messages
                    ]
    finally:
        await consumer.stop()
    return found


async def test_pending_events_are_published_in_order_then_old_rows_are_purged(
    sessionmaker: SessionMaker, kafka_bootstrap: str, unique_name: str
) -> None:
    topic, key = f"alerts-{unique_name}", f"acct-{unique_name}"
    now = datetime.now(UTC)
    old_event_id, recent_event_id = uuid.uuid4(), uuid.uuid4()
    async with session_scope(sessionmaker) as session:
        session.add(_event(topic, key, 0, published_at=now - timedelta(days=8)))
        session.add_all([_event(topic, key, 1), _event(topic, key, 2)])
        session.add_all(
            [
                ProcessedEvent(event_id=old_event_id, processed_at=now - timedelta(days=31)),
                ProcessedEvent(event_id=recent_event_id, processed_at=now),
            ]
        )
    registry = CollectorRegistry()
    kafka = KafkaConnection(
        kafka_bootstrap, KafkaProducer(kafka_bootstrap), [event_topic(topic, partitions=1)]
    )
    relay = AlertOutboxRelay(
        sessionmaker, kafka, poll_interval=0.05, metrics=alerting_metrics(registry)
    )
    await kafka.start()
    await relay.start()
    try:
        await until(lambda: _drained(sessionmaker), "alert outbox not drained")
        records = await _consume(kafka_bootstrap, topic, 2)
        assert relay.healthy()
    finally:
        await relay.stop()
        await kafka.stop()

    assert [(k.decode(), v, h["ce_id"]) for k, v, h in records] == [
        (key, b'{"n": 1}', f"{key}-1"),
        (key, b'{"n": 2}', f"{key}-2"),
    ]
    assert registry.get_sample_value("npsloop_alerts_lifecycle_events_published_total") == 2
    async with session_scope(sessionmaker) as session:
        kept = await session.scalars(select(AlertOutboxMessage.value).order_by("id"))
        assert list(kept) == [b'{"n": 1}', b'{"n": 2}']  # the one published 8 days ago is gone
        processed = await session.scalars(select(ProcessedEvent.event_id))
        assert list(processed) == [recent_event_id]


async def _drained(sessionmaker: SessionMaker) -> bool:
    async with session_scope(sessionmaker) as session:
        query = select(AlertOutboxMessage).where(AlertOutboxMessage.published_at.is_(None))
        return not (await session.scalars(query)).all()
