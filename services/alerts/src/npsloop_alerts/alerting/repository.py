"""The deciding write: one SQL statement, hence one atomic transaction, per response revision.

    fresh     dedupe: insert the ce_id into `alert_processed_events`, or nothing if seen
    upserted  the alert: insert, or update when this revision is newer (only if fresh)
    inserted  a new alert's deliveries (unique per alert, recipient, channel, purpose)
    event     a new alert's `created` event in the outbox
    revised   an updated alert's deliveries pointed at the new revision

Routing runs before the statement (it needs only the directory), so its deliveries are passed
in and used only when the alert turns out to be new. One statement means one round trip and no
BEGIN/COMMIT of its own: PostgreSQL runs a single statement atomically, so either every part is
committed or none is. The INSERT trigger on `deliveries` wakes the delivery loops at commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.types import Boolean, DateTime, Integer, LargeBinary, String

from npsloop_alerts.alerting.events import OutboxRecord

# A newer revision re-points every delivery at it: pending ones render it anyway; sent chat
# messages that can be edited go back to the queue as an edit; a held email is released once
# the response is complete (has its comment). In-flight ones compare `content_revision` with
# what they rendered when their result is recorded.
_DECIDE = text(
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
        RETURNING id, (xmax = 0) AS created
    ), inserted AS (
        INSERT INTO deliveries (
            id, alert_id, purpose, recipient_id, recipient_role, recipient_name, locale, timezone,
            channel, destination, destination_key, status, attempts, not_before,
            next_attempt_at, awaiting_comment, content_revision)
        SELECT d.id, :id, 'alert', d.recipient_id, d.recipient_role, d.recipient_name,
            d.locale, d.timezone, d.channel, d.destination, d.destination_key, 'pending', 0,
            d.not_before, d.next_attempt_at, d.awaiting_comment, :revision
        FROM unnest(:ids, :recipient_ids, :roles, :names, :locales, :timezones, :channels,
                    :destinations, :destination_keys, :not_befores, :next_attempt_ats,
                    :awaiting_comments)
            AS d(id, recipient_id, recipient_role, recipient_name, locale, timezone, channel,
                 destination, destination_key, not_before, next_attempt_at, awaiting_comment)
        WHERE EXISTS (SELECT 1 FROM upserted WHERE created)
        ON CONFLICT (alert_id, recipient_id, channel, purpose) DO NOTHING
        RETURNING 1
    ), event AS (
        INSERT INTO alert_outbox (topic, key, value, headers)
        SELECT :topic, :key, :value, :headers
        WHERE EXISTS (SELECT 1 FROM upserted WHERE created)
        RETURNING 1
    ), revised AS (
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
        WHERE alert_id = :id AND purpose = 'alert' AND content_revision < :revision
            AND EXISTS (SELECT 1 FROM upserted WHERE NOT created)
        RETURNING status, next_attempt_at
    ), due AS (
        SELECT count(*) AS n FROM revised
        WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
    )
    SELECT
        (SELECT count(*) FROM fresh) AS fresh,
        (SELECT created FROM upserted) AS created,
        (SELECT count(*) FROM inserted) AS deliveries,
        (SELECT n FROM due) AS due,
        CASE WHEN (SELECT n FROM due) > 0 THEN pg_notify('npsloop_deliveries', '') END
            AS notified
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
    bindparam("revision", type_=Integer),
    bindparam("complete", type_=Boolean),
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
    bindparam("value", type_=LargeBinary),
    bindparam("headers", type_=JSONB),
)


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


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything the deciding statement may write; which parts apply is decided in SQL."""

    event_id: uuid.UUID
    alert: dict[str, Any]
    deliveries: Sequence[NewDelivery]
    created_event: OutboxRecord
    complete: bool


@dataclass(frozen=True, slots=True)
class Written:
    fresh_event: bool  # False: this ce_id was processed before, nothing written
    created: bool | None  # True: new alert; False: newer revision; None: not newer, no change
    deliveries_created: int
    deliveries_due: int


class AlertRepository:
    def __init__(self, db: AsyncSession | AsyncConnection) -> None:
        self.db = db

    async def decide(self, decision: Decision) -> Written:
        deliveries = decision.deliveries
        event = decision.created_event
        params: dict[str, Any] = {
            **decision.alert,
            "event_id": decision.event_id,
            "complete": decision.complete,
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
            "topic": event.topic,
            "key": event.key,
            "value": event.value,
            "headers": event.headers,
        }
        row = (await self.db.execute(_DECIDE, params)).one()
        return Written(
            fresh_event=bool(row.fresh),
            created=row.created,
            deliveries_created=int(row.deliveries),
            deliveries_due=int(row.due),
        )
