"""The outbox relay: publishes committed directory changes to `npsloop.accounts.v1`, in order.

Delivery semantics: at least once, in commit order per key.
* One transaction per batch: take the relay advisory lock (so a single replica publishes at a
  time and records of one account never overtake each other), read pending rows by id, publish
  them and wait for the broker's ack (`acks=all`), then mark them published and commit.
* If the process dies after the ack but before the commit, the batch is published again on the
  next pass with the same `ce_id`s: harmless on a compacted topic and deduplicated by consumers.
* Kafka or the database unavailable: the batch stays pending and is retried with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from npsloop_alerts.directory.models import OutboxMessage
from npsloop_alerts.directory.repository import OutboxRepository
from npsloop_alerts.kafka import KafkaConnection
from npsloop_alerts.lifecycle import BackgroundLoop
from npsloop_shared.db import SessionMaker, session_scope
from npsloop_shared.kafka.producer import BrokerUnavailable, OutgoingRecord

log = logging.getLogger(__name__)

PUBLISHED = Counter(
    "npsloop_alerts_directory_events_published", "accounts.v1 records published by the relay."
)
PENDING = Gauge(
    "npsloop_alerts_directory_outbox_pending", "Directory changes committed but not yet published."
)
MAX_BACKOFF_SECONDS = 10.0
PURGE_EVERY = timedelta(minutes=10)


class OutboxRelay(BackgroundLoop):
    name = "directory-outbox-relay"

    def __init__(
        self,
        sessionmaker: SessionMaker,
        kafka: KafkaConnection,
        *,
        poll_interval: float = 0.2,
        batch_size: int = 500,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        super().__init__()
        self._sessionmaker = sessionmaker
        self._kafka = kafka
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._retention = retention
        self._last_purge = datetime.min.replace(tzinfo=UTC)

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
                log.warning("outbox relay pass failed; retrying", extra={"error": repr(exc)})
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                await self.pause(backoff)
                continue
            backoff = self._poll_interval
            if published < self._batch_size:
                await self.pause(self._poll_interval)

    async def publish_batch(self) -> int:
        """Publish up to `batch_size` pending records; returns how many were published."""
        async with session_scope(self._sessionmaker) as session:
            outbox = OutboxRepository(session)
            if not await outbox.try_lock_relay():
                return 0  # another replica is publishing
            messages = await outbox.pending(self._batch_size)
            if messages:
                await self._kafka.producer.publish_many(_records(messages))
                await outbox.mark_published([m.id for m in messages], datetime.now(UTC))
            PENDING.set(await outbox.count_pending())
        PUBLISHED.inc(len(messages))
        return len(messages)

    async def _purge_if_due(self) -> None:
        now = datetime.now(UTC)
        if now - self._last_purge < PURGE_EVERY:
            return
        async with session_scope(self._sessionmaker) as session:
            purged = await OutboxRepository(session).purge_published_before(now - self._retention)
        self._last_purge = now
        if purged:
            log.info("outbox purged", extra={"rows": purged})


def _records(messages: Sequence[OutboxMessage]) -> list[OutgoingRecord]:
    return [
        OutgoingRecord(
            topic=message.topic,
            value=message.value,
            key=message.key.encode(),
            headers=[(str(name), str(value).encode()) for name, value in message.headers],
        )
        for message in messages
    ]
