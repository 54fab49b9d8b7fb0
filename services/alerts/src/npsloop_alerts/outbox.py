"""The transactional-outbox relay: publishes committed outbox rows to Kafka, in order.

Every outbox table has the same columns (`id`, `topic`, `key`, `value`, `headers`,
`published_at`); a row is written in the same transaction as the change it describes, so it is
published if and only if that change committed.

Delivery semantics: at least once, in commit order per key.
* One transaction per batch: take the table's advisory lock (so a single replica publishes at a
  time and records of one key never overtake each other), read pending rows by id, publish them
  and wait for the broker's ack (`acks=all`), then mark them published and commit.
* If the process dies after the ack but before the commit, the batch is published again on the
  next pass with the same `ce_id` headers, which consumers dedupe.
* Kafka or the database unavailable: the rows stay pending and the pass is retried with backoff.
* Quiet outbox (or another replica holding the lock): each empty pass waits twice as long as the
  last, from the poll interval up to `MAX_IDLE_SECONDS`; a pass that publishes resets it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    BigInteger,
    DateTime,
    LargeBinary,
    String,
    TableClause,
    column,
    delete,
    func,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.kafka import KafkaConnection
from npsloop_alerts.lifecycle import BackgroundLoop
from npsloop_shared.db import SessionMaker, session_scope
from npsloop_shared.kafka.producer import BrokerUnavailable, OutgoingRecord

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS: Final = 10.0
MAX_IDLE_SECONDS: Final = 1.0  # the most an event waits after a quiet spell
PURGE_EVERY: Final = timedelta(minutes=10)

_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")


@dataclass(frozen=True, slots=True)
class Retention:
    """The relay's purge deletes rows of `table` whose `column` is older than `keep`."""

    table: str
    column: str
    keep: timedelta


@dataclass(frozen=True, slots=True)
class OutboxSpec:
    """What differs between outboxes: the table, its lock, its component name and metrics."""

    name: str  # the component name `/healthz` reports
    table: str
    lock_key: int  # PostgreSQL advisory lock key, one per outbox table
    published: Counter  # incremented by the records each batch published
    pending: Gauge | None = None  # set to the rows still pending after each batch
    also_purge: Sequence[Retention] = ()  # tables purged on the same schedule as the outbox


class OutboxRelay(BackgroundLoop):
    """Component: publishes the rows of the outbox `spec` describes (module docstring)."""

    def __init__(
        self,
        spec: OutboxSpec,
        sessionmaker: SessionMaker,
        kafka: KafkaConnection,
        *,
        poll_interval: float = 0.2,
        batch_size: int = 500,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        super().__init__()
        self.name = spec.name
        self._spec = spec
        self._outbox = _outbox_table(spec.table)
        self._retentions = (Retention(spec.table, "published_at", retention), *spec.also_purge)
        self._sessionmaker = sessionmaker
        self._kafka = kafka
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._last_purge = datetime.min.replace(tzinfo=UTC)

    async def run(self) -> None:
        while not self._kafka.connected.is_set():
            if await self.pause(self._poll_interval):
                return
        backoff = idle = self._poll_interval
        while not self.stopping:
            try:
                published = await self.publish_batch()
                await self._purge_if_due()
            except (BrokerUnavailable, SQLAlchemyError, OSError) as exc:
                log.warning(
                    "outbox relay pass failed; retrying",
                    extra={"component": self.name, "error": repr(exc)},
                )
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                await self.pause(backoff)
                continue
            backoff = self._poll_interval
            if published == 0:
                # Nothing pending, or another replica holds the lock: look less often the
                # longer that lasts (each look is a transaction), up to MAX_IDLE_SECONDS.
                await self.pause(idle)
                idle = min(idle * 2, max(MAX_IDLE_SECONDS, self._poll_interval))
                continue
            idle = self._poll_interval
            if published < self._batch_size:
                await self.pause(self._poll_interval)

    async def publish_batch(self) -> int:
        """Publish up to `batch_size` pending rows; returns how many were published."""
        outbox = self._outbox
        unpublished = outbox.c.published_at.is_(None)
        async with session_scope(self._sessionmaker) as session:
            if not await session.scalar(_LOCK, {"key": self._spec.lock_key}):
                return 0  # another replica is publishing
            query = select(outbox).where(unpublished).order_by(outbox.c.id)
            rows = (await session.execute(query.limit(self._batch_size))).all()
            if rows:
                await self._kafka.producer.publish_many(_records(rows))
                ids = [row.id for row in rows]
                mark = update(outbox).where(outbox.c.id.in_(ids)).values(published_at=func.now())
                await session.execute(mark)
            if self._spec.pending is not None:
                if len(rows) < self._batch_size:
                    self._spec.pending.set(0)  # the read found every pending row; all published
                else:
                    count = select(func.count()).select_from(outbox).where(unpublished)
                    self._spec.pending.set(await session.scalar(count) or 0)
        self._spec.published.inc(len(rows))
        return len(rows)

    async def _purge_if_due(self) -> None:
        now = datetime.now(UTC)
        if now - self._last_purge < PURGE_EVERY:
            return
        async with session_scope(self._sessionmaker) as session:
            purged = {rule.table: await _purge(session, rule, now) for rule in self._retentions}
        self._last_purge = now
        if any(purged.values()):
            log.info("outbox purged", extra={"component": self.name, "rows": purged})


def _outbox_table(name: str) -> TableClause:
    return table(
        name,
        column("id", BigInteger),
        column("topic", String),
        column("key", String),
        column("value", LargeBinary),
        column("headers", JSONB),
        column("published_at", DateTime(timezone=True)),
    )


async def _purge(session: AsyncSession, rule: Retention, now: datetime) -> int:
    target = table(rule.table, column(rule.column, DateTime(timezone=True)))
    result = await session.execute(delete(target).where(target.c[rule.column] < now - rule.keep))
    return int(getattr(result, "rowcount", 0) or 0)


def _records(rows: Sequence[Any]) -> list[OutgoingRecord]:
    """Rows as Kafka records; a NULL `value` is a tombstone."""
    return [
        OutgoingRecord(
            topic=row.topic,
            value=None if row.value is None else bytes(row.value),
            key=str(row.key).encode(),
            headers=[(str(name), str(value).encode()) for name, value in row.headers],
        )
        for row in rows
    ]
