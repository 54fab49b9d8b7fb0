"""Alert queries of the deciding transaction. Nothing here commits.

Each write is one statement (arrays through `unnest`, constant SQL shape, so the prepared
statement is reused) because the decide handler runs once per Kafka record, serially.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Boolean, DateTime, Integer, LargeBinary, String

from npsloop_alerts.alerting.events import OutboxRecord

_UPSERT_ALERT = text(
    """
    WITH fresh AS (
        INSERT INTO alert_processed_events (event_id) VALUES (:event_id)
        ON CONFLICT DO NOTHING
        RETURNING event_id
    ), upserted AS (
        INSERT INTO alerts (
            id, source, response_id, revision, account_id, account_known, account_name, segment,
            bucket, score, comment, kind, touchpoint, respondent, response_locale, attributes,
            submitted_at, received_at, owner_id, status, acknowledge_due_at, resolve_due_at,
            matched_rule_ids)
        SELECT :id, :source, :response_id, :revision, :account_id, :account_known,
            :account_name, :segment, :bucket, :score, :comment, :kind, :touchpoint, :respondent,
            :response_locale, :attributes, :submitted_at, :received_at, :owner_id, 'open',
            :acknowledge_due_at, :resolve_due_at, :matched_rule_ids
        FROM fresh
        ON CONFLICT (source, response_id) DO UPDATE SET
            revision = EXCLUDED.revision,
            bucket = EXCLUDED.bucket,
            score = EXCLUDED.score,
            comment = EXCLUDED.comment,
            respondent = EXCLUDED.respondent,
            response_locale = EXCLUDED.response_locale,
            attributes = EXCLUDED.attributes,
            submitted_at = EXCLUDED.submitted_at,
            updated_at = now()
        WHERE alerts.revision < EXCLUDED.revision
        RETURNING id, (xmax = 0) AS inserted
    )
    SELECT (SELECT count(*) FROM fresh) AS fresh, u.id, u.inserted
    FROM (SELECT 1) AS one LEFT JOIN upserted AS u ON true
    """
).bindparams(
    bindparam("event_id", type_=UUID(as_uuid=True)),
    bindparam("id", type_=UUID(as_uuid=True)),
    bindparam("respondent", type_=JSONB),
    bindparam("attributes", type_=JSONB),
    bindparam("matched_rule_ids", type_=JSONB),
    bindparam("submitted_at", type_=DateTime(timezone=True)),
    bindparam("received_at", type_=DateTime(timezone=True)),
    bindparam("acknowledge_due_at", type_=DateTime(timezone=True)),
    bindparam("resolve_due_at", type_=DateTime(timezone=True)),
)

# Deliveries and the `created` event in one round trip. The INSERT trigger on `deliveries`
# wakes the delivery loops (NOTIFY is sent at commit).
_INSERT_DELIVERIES_AND_EVENT = text(
    """
    WITH inserted AS (
        INSERT INTO deliveries (
            id, alert_id, purpose, recipient_id, recipient_role, recipient_name, locale, timezone,
            channel, destination, destination_key, status, attempts, not_before,
            next_attempt_at, awaiting_comment, content_revision)
        SELECT d.id, :alert_id, 'alert', d.recipient_id, d.recipient_role, d.recipient_name,
            d.locale, d.timezone, d.channel, d.destination, d.destination_key, 'pending', 0,
            d.not_before, d.next_attempt_at, d.awaiting_comment, :revision
        FROM unnest(:ids, :recipient_ids, :roles, :names, :locales, :timezones, :channels,
                    :destinations, :destination_keys, :not_befores, :next_attempt_ats,
                    :awaiting_comments)
            AS d(id, recipient_id, recipient_role, recipient_name, locale, timezone, channel,
                 destination, destination_key, not_before, next_attempt_at, awaiting_comment)
        ON CONFLICT (alert_id, recipient_id, channel, purpose) DO NOTHING
        RETURNING 1
    ), event AS (
        INSERT INTO alert_outbox (topic, key, value, headers)
        SELECT :topic, :key, :value, :headers WHERE :with_event
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM inserted) AS deliveries, (SELECT count(*) FROM event) AS events
    """
).bindparams(
    bindparam("alert_id", type_=UUID(as_uuid=True)),
    bindparam("ids", type_=ARRAY(UUID(as_uuid=True))),
    bindparam("recipient_ids", type_=ARRAY(String)),
    bindparam("roles", type_=ARRAY(String)),
    bindparam("names", type_=ARRAY(String)),
    bindparam("locales", type_=ARRAY(String)),
    bindparam("timezones", type_=ARRAY(String)),
    bindparam("channels", type_=ARRAY(String)),
    bindparam("destinations", type_=ARRAY(String)),
    bindparam("destination_keys", type_=ARRAY(String)),
    bindparam("not_befores", type_=ARRAY(DateTime(timezone=True))),
    bindparam("next_attempt_ats", type_=ARRAY(DateTime(timezone=True))),
    bindparam("awaiting_comments", type_=ARRAY(Boolean)),
    bindparam("revision", type_=Integer),
    bindparam("value", type_=LargeBinary),
    bindparam("headers", type_=JSONB),
    bindparam("with_event", type_=Boolean),
)

# A newer revision: every delivery must now show it. Pending ones render it anyway; sent chat
# messages that can be edited go back to the queue as an edit; a held email is released as soon
# as the response is complete (has its comment). In-flight ones compare `content_revision` with
# what they rendered when their result is recorded.
_APPLY_REVISION = text(
    """
    WITH changed AS (
        UPDATE deliveries SET
            content_revision = :revision,
            status = CASE WHEN status = 'sent' AND editable THEN 'pending' ELSE status END,
            attempts = CASE WHEN status = 'sent' AND editable THEN 0 ELSE attempts END,
            next_attempt_at = CASE
                WHEN status = 'sent' AND editable THEN greatest(now(), not_before)
                WHEN status = 'pending' AND awaiting_comment AND :complete
                    THEN greatest(now(), not_before)
                ELSE next_attempt_at END,
            awaiting_comment = awaiting_comment AND NOT :complete,
            updated_at = now()
        WHERE alert_id = :alert_id AND purpose = 'alert' AND content_revision < :revision
        RETURNING status, next_attempt_at
    )
    SELECT count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()) AS due,
           CASE WHEN count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()) > 0
                THEN pg_notify('npsloop_deliveries', '') END AS notified
    FROM changed
    """
).bindparams(
    bindparam("alert_id", type_=UUID(as_uuid=True)),
    bindparam("revision", type_=Integer),
    bindparam("complete", type_=Boolean),
)


@dataclass(frozen=True, slots=True)
class UpsertOutcome:
    fresh_event: bool
    alert_id: uuid.UUID | None
    inserted: bool


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: uuid.UUID
    recipient_id: str
    recipient_role: str
    recipient_name: str
    locale: str
    timezone: str
    channel: str
    destination: str
    destination_key: str
    not_before: datetime
    next_attempt_at: datetime
    awaiting_comment: bool


class AlertRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record_event_and_upsert(
        self, event_id: uuid.UUID, values: dict[str, Any]
    ) -> UpsertOutcome:
        """Dedupe on `event_id` and insert the alert, or update it when `revision` is newer.

        `alert_id` is None when the event was seen before or its revision is not newer.
        """
        row = (await self.session.execute(_UPSERT_ALERT, {"event_id": event_id, **values})).one()
        return UpsertOutcome(
            fresh_event=bool(row.fresh), alert_id=row.id, inserted=bool(row.inserted)
        )

    async def add_deliveries_and_event(
        self,
        alert_id: uuid.UUID,
        revision: int,
        deliveries: Sequence[NewDelivery],
        event: OutboxRecord | None,
    ) -> int:
        """Insert deliveries (a conflicting one is left alone) and the event; returns how many
        deliveries were new."""
        params: dict[str, Any] = {
            "alert_id": alert_id,
            "revision": revision,
            "ids": [d.id for d in deliveries],
            "recipient_ids": [d.recipient_id for d in deliveries],
            "roles": [d.recipient_role for d in deliveries],
            "names": [d.recipient_name for d in deliveries],
            "locales": [d.locale for d in deliveries],
            "timezones": [d.timezone for d in deliveries],
            "channels": [d.channel for d in deliveries],
            "destinations": [d.destination for d in deliveries],
            "destination_keys": [d.destination_key for d in deliveries],
            "not_befores": [d.not_before for d in deliveries],
            "next_attempt_ats": [d.next_attempt_at for d in deliveries],
            "awaiting_comments": [d.awaiting_comment for d in deliveries],
            "with_event": event is not None,
            "topic": event.topic if event else "",
            "key": event.key if event else "",
            "value": event.value if event else b"",
            "headers": event.headers if event else [],
        }
        row = (await self.session.execute(_INSERT_DELIVERIES_AND_EVENT, params)).one()
        return int(row.deliveries)

    async def apply_revision(self, alert_id: uuid.UUID, revision: int, *, complete: bool) -> int:
        """Point every delivery of the alert at `revision`; returns how many are due now."""
        row = (
            await self.session.execute(
                _APPLY_REVISION, {"alert_id": alert_id, "revision": revision, "complete": complete}
            )
        ).one()
        return int(row.due)
