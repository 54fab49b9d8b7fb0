"""The deciding write: one SQL statement, hence one atomic write, for many response revisions.

For every event of a batch, in one statement:

    fresh     dedupe: insert the ce_id into `alert_processed_events`, or nothing if seen
    upserted  the alert: insert, or update when this revision is newer (only if fresh)
    inserted  a new alert's deliveries (unique per alert, recipient, channel, purpose)
    event     a new alert's `created` event in the outbox
    revised   an updated alert's deliveries pointed at the new revision

Routing runs before the statement (it needs only the directory), so its deliveries are passed
in and used only when the alert turns out to be new. PostgreSQL runs a single statement
atomically, and the parts of one statement all see the database as it was before it, so one
statement may hold at most one event per alert: `decide_many` cuts a batch into runs without
a repeated alert, in order, and a later run sees what an earlier one wrote (a comment arriving
after its score in the same poll). A poll is then one round trip instead of one per event.
The INSERT trigger on `deliveries` wakes the delivery loops at commit.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.types import Text

from npsloop_alerts.alerting.events import OutboxRecord
from npsloop_shared.driver_db import DriverSql

# Events and deliveries travel as two JSON arrays (one parameter each, whatever the batch
# size), typed back into rows by `json_to_recordset` (as `json`, not `jsonb`: read once, never
# stored, so building jsonb's binary form would be wasted work). A newer revision re-points every
# delivery at it: pending ones render it anyway; sent chat messages that can be edited go back
# to the queue as an edit; a held email is released once the response is complete (has its
# comment). In-flight ones compare `content_revision` with what they rendered when their
# result is recorded.
_DECIDE = DriverSql(
    text(
        """
    WITH e AS (
        SELECT * FROM json_to_recordset(CAST(:events AS json)) AS e(
            i integer, event_id uuid, id uuid, source text, response_id text, revision integer,
            account_id text, account_known boolean, account_name text, segment text,
            bucket text, score integer, comment text, kind text, touchpoint text,
            respondent jsonb, response_locale text, attributes jsonb,
            submitted_at timestamptz, received_at timestamptz, owner_id text,
            acknowledge_due_at timestamptz, resolve_due_at timestamptz, matched_rule_ids jsonb,
            complete boolean, topic text, key text, value text, headers jsonb)
    ), fresh AS (
        INSERT INTO alert_processed_events (event_id) SELECT event_id FROM e
        ON CONFLICT DO NOTHING
        RETURNING event_id
    ), upserted AS (
        INSERT INTO alerts (
            id, source, response_id, revision, account_id, account_known, account_name, segment,
            bucket, score, comment, kind, touchpoint, respondent, response_locale, attributes,
            submitted_at, received_at, owner_id, status, acknowledge_due_at, resolve_due_at,
            matched_rule_ids)
        SELECT e.id, e.source, e.response_id, e.revision, e.account_id, e.account_known,
            e.account_name, e.segment, e.bucket, e.score, e.comment, e.kind, e.touchpoint,
            e.respondent, e.response_locale, e.attributes, e.submitted_at, e.received_at,
            e.owner_id, 'open', e.acknowledge_due_at, e.resolve_due_at, e.matched_rule_ids
        FROM e JOIN fresh USING (event_id)
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
        SELECT d.id, d.alert_id, 'alert', d.recipient_id, d.recipient_role, d.recipient_name,
            d.locale, d.timezone, d.channel, d.destination, d.destination_key, 'pending', 0,
            d.not_before, d.next_attempt_at, d.awaiting_comment, e.revision
        FROM json_to_recordset(CAST(:deliveries AS json)) AS d(
                id uuid, alert_id uuid, recipient_id text, recipient_role text,
                recipient_name text, locale text, timezone text, channel text, destination text,
                destination_key text, not_before timestamptz, next_attempt_at timestamptz,
                awaiting_comment boolean)
            JOIN e ON e.id = d.alert_id
            JOIN upserted AS u ON u.id = d.alert_id AND u.created
        ON CONFLICT (alert_id, recipient_id, channel, purpose) DO NOTHING
        RETURNING alert_id
    ), event AS (
        INSERT INTO alert_outbox (topic, key, value, headers)
        SELECT e.topic, e.key, decode(e.value, 'base64'), e.headers
        FROM e JOIN upserted AS u ON u.id = e.id AND u.created
        ORDER BY e.i
        RETURNING 1
    ), revised AS (
        UPDATE deliveries SET
            content_revision = e.revision,
            status = CASE WHEN status = 'sent' AND editable THEN 'pending' ELSE status END,
            attempts = CASE WHEN status = 'sent' AND editable THEN 0 ELSE attempts END,
            next_attempt_at = CASE
                WHEN status = 'sent' AND editable THEN greatest(now(), not_before)
                WHEN status = 'pending' AND awaiting_comment AND e.complete
                    THEN greatest(now(), not_before)
                ELSE next_attempt_at END,
            awaiting_comment = awaiting_comment AND NOT e.complete,
            updated_at = now()
        FROM e JOIN upserted AS u ON u.id = e.id AND NOT u.created
        WHERE deliveries.alert_id = e.id AND deliveries.purpose = 'alert'
            AND deliveries.content_revision < e.revision
            -- Most polls update no alert. Without these two conditions, a planner that
            -- believes `deliveries` small (its statistics lag a table that grows fast, as on a
            -- fresh install) scans every delivery on every poll: a cost that grows with the
            -- table. The EXISTS is a one-time filter that skips this update when no alert was
            -- updated, and the id list makes the updated alerts' deliveries an index lookup.
            AND deliveries.alert_id = ANY (ARRAY(SELECT id FROM upserted WHERE NOT created))
            AND EXISTS (SELECT FROM upserted WHERE NOT created)
        RETURNING deliveries.status, deliveries.next_attempt_at
    ), created_per_alert AS (
        SELECT alert_id, count(*) AS n FROM inserted GROUP BY alert_id
    ), notified AS (
        -- Revised deliveries due now need a wake-up of their own (inserted ones fire the
        -- INSERT trigger).
        SELECT pg_notify('npsloop_deliveries', '')
        WHERE EXISTS (
            SELECT 1 FROM revised
            WHERE status = 'pending' AND next_attempt_at <= clock_timestamp())
    )
    SELECT e.i, f.event_id IS NOT NULL AS fresh, u.created, coalesce(c.n, 0) AS deliveries,
        (SELECT count(*) FROM notified) AS notified
    FROM e
        LEFT JOIN fresh AS f USING (event_id)
        LEFT JOIN upserted AS u ON u.id = e.id
        LEFT JOIN created_per_alert AS c ON c.alert_id = e.id
    ORDER BY e.i
    """
    ).bindparams(bindparam("events", type_=Text), bindparam("deliveries", type_=Text))
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


class AlertRepository:
    """The deciding write on `connection`, an asyncpg connection (see `driver_db`)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def decide_many(self, decisions: Sequence[Decision]) -> list[Written]:
        """Write `decisions` in order, atomically: one statement per run without a repeated
        alert, and a transaction around the runs when there are several (a savepoint when the
        connection is in a transaction already)."""
        runs = _runs_without_repeats(decisions)
        if len(runs) == 1:
            return await self._decide_run(runs[0])  # one statement: atomic by itself
        written: list[Written] = []
        async with self.connection.transaction():
            for run in runs:
                written.extend(await self._decide_run(run))
        return written

    async def _decide_run(self, run: Sequence[Decision]) -> list[Written]:
        events: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        for index, decision in enumerate(run):
            record = decision.created_event
            events.append(
                {
                    **decision.alert,
                    "i": index,
                    "event_id": decision.event_id,
                    "complete": decision.complete,
                    "topic": record.topic,
                    "key": record.key,
                    "value": base64.b64encode(record.value).decode(),
                    "headers": record.headers,
                }
            )
            alert_id = decision.alert["id"]
            deliveries.extend({"alert_id": alert_id, **_fields(d)} for d in decision.deliveries)
        # orjson writes UUIDs and aware datetimes as the text PostgreSQL reads back.
        rows = await _DECIDE.fetch(
            self.connection,
            {
                "events": orjson.dumps(events).decode(),
                "deliveries": orjson.dumps(deliveries).decode(),
            },
        )
        return [
            Written(
                fresh_event=bool(row["fresh"]),
                created=row["created"],
                deliveries_created=int(row["deliveries"]),
            )
            for row in rows
        ]


def _runs_without_repeats(decisions: Sequence[Decision]) -> list[list[Decision]]:
    runs: list[list[Decision]] = []
    seen: set[object] = set()
    for decision in decisions:
        alert_id = decision.alert["id"]
        if not runs or alert_id in seen:
            runs.append([])
            seen.clear()
        runs[-1].append(decision)
        seen.add(alert_id)
    return runs


def _fields(delivery: NewDelivery) -> dict[str, Any]:
    return {name: getattr(delivery, name) for name in NewDelivery.__slots__}
