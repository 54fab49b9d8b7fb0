"""The alert outbox relay: publishes committed lifecycle events (`alert_outbox`) to
`npsloop.alerts.v1`, and purges old `alert_processed_events` on the same schedule.

Delivery semantics are the shared relay's (`npsloop_alerts.outbox`): at least once, in commit
order per key (an account's events never overtake each other); a re-publish after a crash
carries the same `ce_id`s, which consumers dedupe.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from npsloop_alerts.alerting.metrics import AlertingMetrics
from npsloop_alerts.alerting.models import AlertOutboxMessage, ProcessedEvent
from npsloop_alerts.kafka import KafkaConnection
from npsloop_alerts.outbox import OutboxRelay, OutboxSpec, Retention
from npsloop_shared.db import SessionMaker

RELAY_LOCK_KEY: Final = 0x6E70_736C_6F6F_7002  # "npsloop" + 2: the alert outbox relay


class AlertOutboxRelay(OutboxRelay):
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
        spec = OutboxSpec(
            name="alert-outbox-relay",
            table=AlertOutboxMessage.__tablename__,
            lock_key=RELAY_LOCK_KEY,
            published=metrics.events_published,
            also_purge=[
                Retention(ProcessedEvent.__tablename__, "processed_at", processed_event_retention)
            ],
        )
        super().__init__(
            spec,
            sessionmaker,
            kafka,
            poll_interval=poll_interval,
            batch_size=batch_size,
            retention=retention,
        )
