"""Publishes committed alert lifecycle events (`alert_outbox`) to `npsloop.alerts.v1`.

At least once, in commit order per key: one transaction per batch takes an advisory lock (one
replica publishes at a time, so an account's events never overtake each other), reads pending
rows by id, publishes them and waits for the broker's ack, then marks them and commits. A crash
between the ack and the commit publishes the batch again with the same `ce_id`s, which consumers
dedupe. Kafka or PostgreSQL away: rows stay pending and the pass is retried with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import BigInteger

from npsloop_alerts.alerting.metrics import AlertingMetrics
from npsloop_alerts.kafka import KafkaConnection
from npsloop_alerts.lifecycle import BackgroundLoop
from npsloop_shared.db import SessionMaker, session_scope
from npsloop_shared.kafka.producer import BrokerUnavailable, OutgoingRecord

log = logging.getLogger(__name__)

RELAY_LOCK_KEY: Final = 0x6E70_736C_6F6F_7002  # "npsloop" + 2: the alert outbox relay
MAX_BACKOFF_SECONDS: Final = 10.0
PURGE_EVERY: Final = timedelta(minutes=10)

_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")
_PENDING = text(
    "SELECT id, topic, key, value, headers FROM alert_outbox"
    " WHERE published_at IS NULL ORDER BY id LIMIT :limit"
).columns(headers=JSONB)
_MARK = text("UPDATE alert_outbox SET published_at = now() WHERE id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(BigInteger))
)
_PURGE = text("DELETE FROM alert_outbox WHERE published_at < :cutoff")
_PURGE_EVENTS = text("DELETE FROM alert_processed_events WHERE processed_at < :cutoff")


class AlertOutboxRelay(BackgroundLoop):
    name = "alert-outbox-relay"

    def __init__(
        self,
        sessionmaker: SessionMaker,
        kafka: KafkaConnection,
        *,
        poll_interval: float = 0.2,
        batch_size: int = 500,
        retention: timedelta = timedelta(days=7),
        processed_event_retention: timedelta = timedelta(days=30),
        metrics: AlertingMetrics,
    ) -> None:
        super().__init__()
        self._sessionmaker = sessionmaker
        self._kafka = kafka
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._retention = retention
        self._processed_event_retention = processed_event_retention
        self._last_purge = datetime.min.replace(tzinfo=UTC)
        self._metrics = metrics

    async def run(self) -> None:
        while not self._kafka.connected.is_set():
            if await self.pause(self._poll_interval):
                return
        backoff = self._poll_interval
        while not self.stopping:
            try:
                published = await self.publish_batch()
                await self._purge_if_due()
            except (BrokerUnavailable, SQLAlchemyError, OSError) as exc:
                log.warning("alert outbox pass failed; retrying", extra={"error": repr(exc)})
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                await self.pause(backoff)
                continue
            backoff = self._poll_interval
            if published < self._batch_size:
                await self.pause(self._poll_interval)

    async def publish_batch(self) -> int:
        """Publish up to `batch_size` pending events; returns how many."""
        async with session_scope(self._sessionmaker) as session:
            if not await session.scalar(_LOCK, {"key": RELAY_LOCK_KEY}):
                return 0
            rows = (await session.execute(_PENDING, {"limit": self._batch_size})).all()
            if rows:
                await self._kafka.producer.publish_many(_records(rows))
                await session.execute(_MARK, {"ids": [row.id for row in rows]})
        self._metrics.events_published.inc(len(rows))
        return len(rows)

    async def _purge_if_due(self) -> None:
        now = datetime.now(UTC)
        if now - self._last_purge < PURGE_EVERY:
            return
        async with session_scope(self._sessionmaker) as session:
            await session.execute(_PURGE, {"cutoff": now - self._retention})
            await session.execute(_PURGE_EVENTS, {"cutoff": now - self._processed_event_retention})
        self._last_purge = now


def _records(rows: Sequence[Any]) -> list[OutgoingRecord]:
    return [
        OutgoingRecord(
            topic=row.topic,
            value=bytes(row.value),
            key=str(row.key).encode(),
            headers=[(str(name), str(value).encode()) for name, value in row.headers],
        )
        for row in rows
    ]
