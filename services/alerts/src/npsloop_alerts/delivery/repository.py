"""Delivery queue queries. Nothing here commits: the loop's claim and record steps do.

Claiming is one statement: lock due rows with `FOR UPDATE SKIP LOCKED` (several replicas take
disjoint batches), lease them (`status = in_flight`, `next_attempt_at = now() + lease`) and read
everything the messages need, and when the next delivery left behind falls due. Recording is
one statement for a whole batch of outcomes, their attempts and the failure runs they end (arrays
through `unnest`), guarded by the claim token so a result that arrives after its lease was taken
over cannot overwrite the newer claim.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.types import Boolean, DateTime, Float, Integer, String

from npsloop_alerts.delivery.work import AlertContent, ClaimedDelivery
from npsloop_shared.driver_db import DriverSql

NOTIFY_CHANNEL: Final = "npsloop_deliveries"

_UUIDS = ARRAY(UUID(as_uuid=True))
_TEXTS = ARRAY(String)
_FLOATS = ARRAY(Float)
_INTS = ARRAY(Integer)
_BOOLS = ARRAY(Boolean)
_TIMES = ARRAY(DateTime(timezone=True))

_CLAIM = DriverSql(
    text(
        """
    WITH due AS (
        SELECT id, status AS previous_status FROM deliveries
        WHERE status IN ('pending', 'in_flight') AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE deliveries AS d SET
            status = 'in_flight',
            attempts = d.attempts + 1,
            claim_token = :token,
            next_attempt_at = now() + make_interval(secs => :lease),
            updated_at = now()
        FROM due WHERE d.id = due.id
        RETURNING d.id, d.alert_id, d.purpose, d.recipient_id, d.recipient_name, d.locale,
            d.timezone, d.channel, d.destination, d.destination_key, d.attempts,
            d.external_ref, d.editable, d.details, due.previous_status
    )
    SELECT c.*, a.revision, a.bucket, a.score, a.comment, a.account_id, a.account_name,
        a.segment, a.touchpoint, a.kind, a.respondent, a.submitted_at, a.acknowledge_due_at,
        (dd.disabled_at IS NOT NULL) AS destination_disabled,
        -- When the loop should look again: the next delivery left behind (the ones claimed
        -- here were due, so not after now() in this statement's snapshot). Saves a query.
        (SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM deliveries
         WHERE status IN ('pending', 'in_flight') AND next_attempt_at > now()) AS next_due_in
    FROM claimed AS c
    JOIN alerts AS a ON a.id = c.alert_id
    LEFT JOIN delivery_destinations AS dd ON dd.key = c.destination_key
    """
    ).bindparams(
        bindparam("token", type_=UUID(as_uuid=True)),
        bindparam("lease", type_=Float),
    )
)

# Ensures a row per paced destination and locks them (in key order: no deadlock between
# replicas); DO UPDATE is what makes existing rows come back locked too.
_LOCK_DESTINATIONS = DriverSql(
    text(
        """
    INSERT INTO delivery_destinations AS dd (key)
    SELECT key FROM unnest(:keys) AS key ORDER BY key
    ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
    RETURNING dd.key, greatest(dd.next_allowed_at, now()) AS next_allowed_at, now() AS db_now
    """
    ).bindparams(bindparam("keys", type_=_TEXTS))
)

_ADVANCE_DESTINATIONS = DriverSql(
    text(
        """
    UPDATE delivery_destinations AS dd SET next_allowed_at = v.at, updated_at = now()
    FROM unnest(:keys, :ats) AS v(key, at) WHERE dd.key = v.key
    """
    ).bindparams(bindparam("keys", type_=_TEXTS), bindparam("ats", type_=_TIMES))
)

_DEFER = DriverSql(
    text(
        """
    UPDATE deliveries AS d SET
        status = 'pending', attempts = d.attempts - 1, next_attempt_at = v.at,
        claim_token = NULL, updated_at = now()
    FROM unnest(:ids, :ats) AS v(id, at)
    WHERE d.id = v.id AND d.claim_token = :token
    """
    ).bindparams(
        bindparam("ids", type_=_UUIDS),
        bindparam("ats", type_=_TIMES),
        bindparam("token", type_=UUID(as_uuid=True)),
    )
)

# Attempts are inserted alone (leases found expired) or as part of `_RECORD`.
_INSERT_ATTEMPTS_SQL = """
    INSERT INTO delivery_attempts (
        delivery_id, number, operation, outcome, started_at, latency_ms, vendor_status,
        error_class, error_reason, error_message, retry_after_seconds, rendered_revision)
    SELECT * FROM unnest(:a_ids, :a_numbers, :a_operations, :a_outcomes, :a_started,
                         :a_latencies, :a_vendor_statuses, :a_error_classes, :a_reasons,
                         :a_messages, :a_retry_afters, :a_rendered)
"""
_ATTEMPT_PARAMS = (
    bindparam("a_ids", type_=_UUIDS),
    bindparam("a_numbers", type_=_INTS),
    bindparam("a_operations", type_=_TEXTS),
    bindparam("a_outcomes", type_=_TEXTS),
    bindparam("a_started", type_=_TIMES),
    bindparam("a_latencies", type_=_FLOATS),
    bindparam("a_vendor_statuses", type_=_INTS),
    bindparam("a_error_classes", type_=_TEXTS),
    bindparam("a_reasons", type_=_TEXTS),
    bindparam("a_messages", type_=_TEXTS),
    bindparam("a_retry_afters", type_=_FLOATS),
    bindparam("a_rendered", type_=_INTS),
)
_INSERT_ATTEMPTS = DriverSql(text(_INSERT_ATTEMPTS_SQL).bindparams(*_ATTEMPT_PARAMS))

# The usual outcome write, in one statement (one round trip, one parse): each outcome's row,
# its attempt, and the failure runs its successes end. The three parts touch different rows and
# none reads another's result, which is what data-modifying CTEs allow.
_RECORD = DriverSql(
    text(
        f"""
    WITH r AS (
        SELECT * FROM unnest(:ids, :tokens, :statuses, :delays, :refs, :editables, :rendered,
                             :error_classes, :errors, :sent)
            AS r(id, token, status, delay, ref, editable, rendered, error_class, error, sent)
    ), recorded AS (
        UPDATE deliveries AS d SET
            status = CASE WHEN r.sent AND r.editable AND d.content_revision > r.rendered
                          THEN 'pending' ELSE r.status END,
            attempts = CASE WHEN r.sent AND r.editable AND d.content_revision > r.rendered
                            THEN 0 ELSE d.attempts END,
            next_attempt_at = CASE
                WHEN r.sent AND r.editable AND d.content_revision > r.rendered THEN now()
                WHEN r.delay IS NOT NULL THEN now() + make_interval(secs => r.delay)
                ELSE d.next_attempt_at END,
            rendered_revision = CASE WHEN r.sent THEN r.rendered ELSE d.rendered_revision END,
            external_ref = coalesce(r.ref::jsonb, d.external_ref),
            editable = CASE WHEN r.sent THEN r.editable ELSE d.editable END,
            sent_at = CASE WHEN r.sent THEN coalesce(d.sent_at, now()) ELSE d.sent_at END,
            dead_at = CASE WHEN r.status = 'dead' THEN now() END,
            last_error_class = r.error_class,
            last_error = r.error,
            claim_token = NULL,
            updated_at = now()
        FROM r
        WHERE d.id = r.id AND d.claim_token = r.token AND d.status = 'in_flight'
    ), attempted AS ({_INSERT_ATTEMPTS_SQL}), reset AS (
        UPDATE delivery_destinations SET consecutive_permanent_failures = 0, updated_at = now()
        WHERE key = ANY(:reset_keys) AND consecutive_permanent_failures > 0
    )
    SELECT 1
    """  # noqa: S608 - constants only; every value is a bound parameter
    ).bindparams(
        bindparam("ids", type_=_UUIDS),
        bindparam("tokens", type_=_UUIDS),
        bindparam("statuses", type_=_TEXTS),
        bindparam("delays", type_=_FLOATS),
        bindparam("refs", type_=_TEXTS),
        bindparam("editables", type_=_BOOLS),
        bindparam("rendered", type_=_INTS),
        bindparam("error_classes", type_=_TEXTS),
        bindparam("errors", type_=_TEXTS),
        bindparam("sent", type_=_BOOLS),
        *_ATTEMPT_PARAMS,
        bindparam("reset_keys", type_=_TEXTS),
    )
)

_COUNT_FAILURES = DriverSql(
    text(
        """
    INSERT INTO delivery_destinations AS dd (key, consecutive_permanent_failures)
    SELECT * FROM unnest(:keys, :counts)
    ON CONFLICT (key) DO UPDATE SET
        consecutive_permanent_failures =
            dd.consecutive_permanent_failures + EXCLUDED.consecutive_permanent_failures,
        updated_at = now()
    RETURNING dd.key, dd.consecutive_permanent_failures AS failures,
        (dd.disabled_at IS NOT NULL) AS disabled
    """
    ).bindparams(bindparam("keys", type_=_TEXTS), bindparam("counts", type_=_INTS))
)

_DISABLE = DriverSql(
    text(
        """
    UPDATE delivery_destinations AS dd SET
        disabled_at = now(), disabled_reason = v.reason, updated_at = now()
    FROM unnest(:keys, :reasons) AS v(key, reason)
    WHERE dd.key = v.key AND dd.disabled_at IS NULL
    RETURNING dd.key
    """
    ).bindparams(bindparam("keys", type_=_TEXTS), bindparam("reasons", type_=_TEXTS))
)

# The manager of the alert's account is told by email; without a manager with an address,
# the team fallback. The INSERT trigger wakes the loops.
_ADD_NOTICE = DriverSql(
    text(
        """
    INSERT INTO deliveries (
        id, alert_id, purpose, recipient_id, recipient_role, recipient_name, locale, timezone,
        channel, destination, destination_key, status, attempts, not_before, next_attempt_at,
        content_revision, details)
    SELECT :id, a.id, 'destination_disabled', p.id,
        CASE WHEN p.id = acc.manager_id THEN 'manager' ELSE 'team' END,
        p.name, p.locale, p.timezone, 'email', p.email, 'email:' || lower(p.email), 'pending', 0,
        now(), now(), a.revision, :details
    FROM alerts AS a
    LEFT JOIN accounts AS acc ON acc.id = a.account_id
    JOIN people AS p ON p.id IN (
        acc.manager_id, (SELECT fallback_person_id FROM team ORDER BY id LIMIT 1))
    WHERE a.id = :alert_id AND p.email IS NOT NULL AND p.active
    ORDER BY (p.id = acc.manager_id) DESC NULLS LAST
    LIMIT 1
    ON CONFLICT (alert_id, recipient_id, channel, purpose) DO NOTHING
    RETURNING id
    """
    ).bindparams(
        bindparam("id", type_=UUID(as_uuid=True)),
        bindparam("alert_id", type_=UUID(as_uuid=True)),
        bindparam("details", type_=JSONB),
    )
)

_HONOUR_HINTS = DriverSql(
    text(
        """
    INSERT INTO delivery_destinations AS dd (key, next_allowed_at)
    SELECT key, now() + make_interval(secs => secs) FROM unnest(:keys, :secs) AS v(key, secs)
    ON CONFLICT (key) DO UPDATE SET
        next_allowed_at = greatest(dd.next_allowed_at, EXCLUDED.next_allowed_at),
        updated_at = now()
    """
    ).bindparams(bindparam("keys", type_=_TEXTS), bindparam("secs", type_=_FLOATS))
)

_NEXT_DUE_IN = DriverSql(
    text(
        """
    SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM deliveries
    WHERE status IN ('pending', 'in_flight')
    """
    )
)

_QUEUE_STATS = DriverSql(
    text(
        """
    SELECT
        count(*) FILTER (WHERE status = 'pending') AS pending,
        count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()) AS due,
        count(*) FILTER (WHERE status = 'in_flight') AS in_flight,
        coalesce(extract(epoch FROM now() - min(next_attempt_at)
            FILTER (WHERE status = 'pending' AND next_attempt_at <= now())), 0) AS oldest_due_age
    FROM deliveries WHERE status IN ('pending', 'in_flight')
    """
    )
)

_DEAD_COUNT = DriverSql(text("SELECT count(*) FROM deliveries WHERE status = 'dead'"))


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    delivery: ClaimedDelivery
    lease_expired: bool  # it was in flight when claimed: the previous holder died mid-send


@dataclass(frozen=True, slots=True)
class Claimed:
    rows: list[ClaimedRow]
    # Seconds until the next delivery not claimed falls due, None when none waits; read by the
    # same statement, so known only when it claimed something (`rows` not empty).
    next_due_in: float | None


@dataclass(frozen=True, slots=True)
class ResultRow:
    """How one attempt changes its delivery (`delay` seconds until due again, if pending)."""

    delivery_id: uuid.UUID
    claim_token: uuid.UUID
    status: str
    delay: float | None
    external_ref: dict[str, Any] | None
    editable: bool
    rendered_revision: int | None
    error_class: str | None
    error: str | None
    sent: bool


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_id: uuid.UUID
    number: int
    operation: str
    outcome: str
    started_at: datetime
    latency_ms: float | None
    vendor_status: int | None
    error_class: str | None
    error_reason: str | None
    error_message: str | None
    retry_after: float | None
    rendered_revision: int | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    due: int
    in_flight: int
    dead: int
    oldest_due_age_seconds: float


class DeliveryRepository:
    """The queue's statements, on a `DriverPool` connection inside the caller's transaction."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def claim_due(self, limit: int, token: uuid.UUID, lease_seconds: float) -> Claimed:
        params = {"limit": limit, "token": token, "lease": lease_seconds}
        rows = await _CLAIM.fetch(self.connection, params)
        next_due_in = rows[0]["next_due_in"] if rows else None
        return Claimed(
            [_claimed(row, token) for row in rows],
            None if next_due_in is None else float(next_due_in),
        )

    async def lock_destinations(
        self, keys: Sequence[str]
    ) -> tuple[dict[str, datetime], datetime | None]:
        """Lock paced destinations; returns each one's next free slot and the database's now."""
        if not keys:
            return {}, None
        rows = await _LOCK_DESTINATIONS.fetch(self.connection, {"keys": sorted(set(keys))})
        db_now = rows[0]["db_now"] if rows else None
        return {row["key"]: row["next_allowed_at"] for row in rows}, db_now

    async def advance_destinations(self, next_allowed: Mapping[str, datetime]) -> None:
        if next_allowed:
            keys = sorted(next_allowed)
            await _ADVANCE_DESTINATIONS.execute(
                self.connection, {"keys": keys, "ats": [next_allowed[k] for k in keys]}
            )

    async def defer(self, token: uuid.UUID, until: Mapping[uuid.UUID, datetime]) -> None:
        """Give back claimed rows whose pace slot is too far away (no attempt counted)."""
        if until:
            ids = list(until)
            await _DEFER.execute(
                self.connection, {"ids": ids, "ats": [until[i] for i in ids], "token": token}
            )

    async def record(
        self,
        results: Sequence[ResultRow],
        attempts: Sequence[AttemptRow],
        reset_keys: Collection[str],
    ) -> None:
        """Store outcomes, their attempts, and the end of the failure runs of destinations
        that just succeeded, in one statement. Each outcome is stored only while its claim
        (token, in flight) still holds: a result that arrives after its lease was taken over
        cannot overwrite the newer claim."""
        if not results and not attempts and not reset_keys:
            return
        await _RECORD.execute(
            self.connection,
            {
                "ids": [r.delivery_id for r in results],
                "tokens": [r.claim_token for r in results],
                "statuses": [r.status for r in results],
                "delays": [r.delay for r in results],
                "refs": [
                    orjson.dumps(r.external_ref).decode() if r.external_ref else None
                    for r in results
                ],
                "editables": [r.editable for r in results],
                "rendered": [r.rendered_revision for r in results],
                "error_classes": [r.error_class for r in results],
                "errors": [r.error for r in results],
                "sent": [r.sent for r in results],
                **_attempt_params(attempts),
                "reset_keys": sorted(reset_keys),
            },
        )

    async def add_attempts(self, attempts: Sequence[AttemptRow]) -> None:
        if attempts:
            await _INSERT_ATTEMPTS.execute(self.connection, _attempt_params(attempts))

    async def count_failures(self, counts: Mapping[str, int]) -> dict[str, tuple[int, bool]]:
        """Add permanent failures; returns each key's run length and whether it is disabled."""
        if not counts:
            return {}
        keys = sorted(counts)
        rows = await _COUNT_FAILURES.fetch(
            self.connection, {"keys": keys, "counts": [counts[k] for k in keys]}
        )
        return {row["key"]: (int(row["failures"]), bool(row["disabled"])) for row in rows}

    async def disable(self, reasons: Mapping[str, str]) -> list[str]:
        """Disable these destinations; returns the keys this call disabled (not already)."""
        if not reasons:
            return []
        keys = sorted(reasons)
        rows = await _DISABLE.fetch(
            self.connection, {"keys": keys, "reasons": [reasons[k] for k in keys]}
        )
        return [row["key"] for row in rows]

    async def add_notice(
        self, notice_id: uuid.UUID, alert_id: uuid.UUID, details: dict[str, Any]
    ) -> bool:
        """Queue the "destination disabled" email; False when nobody can be told."""
        rows = await _ADD_NOTICE.fetch(
            self.connection, {"id": notice_id, "alert_id": alert_id, "details": details}
        )
        return bool(rows)

    async def honour_retry_hints(self, hints: Mapping[str, float]) -> None:
        """No message leaves for these destinations before the vendor's hint has passed."""
        if hints:
            keys = sorted(hints)
            await _HONOUR_HINTS.execute(
                self.connection, {"keys": keys, "secs": [hints[k] for k in keys]}
            )

    async def next_due_in(self) -> float | None:
        """Seconds until the next delivery is due (negative: overdue), None when none waits."""
        value = await _NEXT_DUE_IN.fetchval(self.connection)
        return None if value is None else float(value)

    async def queue_stats(self) -> QueueStats:
        row = (await _QUEUE_STATS.fetch(self.connection))[0]
        dead = await _DEAD_COUNT.fetchval(self.connection) or 0
        return QueueStats(
            pending=int(row["pending"]),
            due=int(row["due"]),
            in_flight=int(row["in_flight"]),
            dead=int(dead),
            oldest_due_age_seconds=float(row["oldest_due_age"]),
        )


def _claimed(row: Mapping[str, Any], token: uuid.UUID) -> ClaimedRow:
    alert = AlertContent(
        revision=row["revision"],
        bucket=row["bucket"],
        score=row["score"],
        comment=row["comment"],
        account_id=row["account_id"],
        account_name=row["account_name"],
        segment=row["segment"],
        touchpoint=row["touchpoint"],
        kind=row["kind"],
        respondent=row["respondent"],
        submitted_at=row["submitted_at"],
        acknowledge_due_at=row["acknowledge_due_at"],
    )
    delivery = ClaimedDelivery(
        id=row["id"],
        claim_token=token,
        alert_id=row["alert_id"],
        purpose=row["purpose"],
        recipient_id=row["recipient_id"],
        recipient_name=row["recipient_name"],
        locale=row["locale"],
        timezone=row["timezone"],
        channel=row["channel"],
        destination=row["destination"],
        destination_key=row["destination_key"],
        attempts=row["attempts"],
        external_ref=row["external_ref"],
        editable=row["editable"],
        details=row["details"],
        destination_disabled=row["destination_disabled"],
        alert=alert,
    )
    return ClaimedRow(delivery=delivery, lease_expired=row["previous_status"] == "in_flight")


def _attempt_params(attempts: Sequence[AttemptRow]) -> dict[str, list[Any]]:
    return {
        "a_ids": [a.delivery_id for a in attempts],
        "a_numbers": [a.number for a in attempts],
        "a_operations": [a.operation for a in attempts],
        "a_outcomes": [a.outcome for a in attempts],
        "a_started": [a.started_at for a in attempts],
        "a_latencies": [a.latency_ms for a in attempts],
        "a_vendor_statuses": [a.vendor_status for a in attempts],
        "a_error_classes": [a.error_class for a in attempts],
        "a_reasons": [a.error_reason for a in attempts],
        "a_messages": [a.error_message for a in attempts],
        "a_retry_afters": [a.retry_after for a in attempts],
        "a_rendered": [a.rendered_revision for a in attempts],
    }
