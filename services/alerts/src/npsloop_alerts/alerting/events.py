"""Alert lifecycle events for `npsloop.alerts.v1`, as outbox rows written in the deciding
transaction (so an event exists exactly when the alert change committed).

The `ce_id` is a UUIDv5 of (alert id, event kind, step): re-publishing a row after a relay crash
yields the same id, and consumers dedupe on it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import orjson

from npsloop_shared.cloudevents import CloudEventAttributes
from npsloop_shared.contracts import AlertEventKind, AlertLifecycleEvent, alert_event_type

EVENT_SOURCE: Final = "npsloop-alerts"
ALERT_EVENT_NAMESPACE: Final = uuid.UUID("0b6f7a9e-3d52-4c1b-8f0e-5a2d4c6e8b10")


def alert_event_id(alert_id: uuid.UUID, kind: AlertEventKind, step: str = "") -> uuid.UUID:
    return uuid.uuid5(ALERT_EVENT_NAMESPACE, f"{alert_id}\x1f{kind.value}\x1f{step}")


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A Kafka record waiting in `alert_outbox`: headers as `[name, value]` text pairs."""

    topic: str
    key: str
    value: bytes
    headers: list[list[str]]


def lifecycle_record(
    event: AlertLifecycleEvent, *, topic: str, step: str = "", now: datetime
) -> OutboxRecord:
    attributes = CloudEventAttributes(
        id=str(alert_event_id(event.alert_id, event.event, step)),
        type=alert_event_type(event.event),
        source=EVENT_SOURCE,
        time=now,
        subject=str(event.alert_id),
    )
    headers = [[name, value.decode()] for name, value in attributes.to_headers()]
    return OutboxRecord(
        topic=topic,
        key=event.account_id,
        value=orjson.dumps(event.model_dump(mode="json")),
        headers=headers,
    )
