"""`claim_due_deliveries()`: a delivery claim, with its pacing, in one statement.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

A claim used to be a transaction of six round trips (BEGIN, claim, lock the destinations, advance
them, give back what is too far away, COMMIT). Each round trip waits for the alerts event loop to
come back to it, and under load that loop is busy rendering and sending the previous batch: a
claim took ~40 ms on average at 200 responses/s, and every new delivery waited for one and a
half of them. As one function call it is one round trip, atomic as a single statement is.

What it does, in order (see `npsloop_alerts.delivery.pacing` for the rules):
1. Locks up to `p_limit` due rows with `FOR UPDATE SKIP LOCKED` (replicas take disjoint rows),
   leases them (`in_flight` until now + `p_lease`, one more attempt, `p_token`), and notes when
   the next delivery left behind falls due.
2. Records an attempt `lease_expired` for each row that was still in flight (its previous holder
   stopped before recording an outcome).
3. Locks the paced destinations of the rows (in key order, so replicas never deadlock), gives
   each row, in due order, the earliest slot all its limits allow, and advances the destinations
   by the slots handed out. A row whose slot is beyond now + `p_window` goes back to the queue,
   due at its slot (staggered among such rows), without counting the attempt.
4. Returns every claimed row with its alert, whether its destination is disabled, whether its
   lease had expired, its delay until its slot or whether it was given back, and seconds until
   the next delivery not claimed falls due (NULL: none waits).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIM_FUNCTION = r"""
CREATE FUNCTION claim_due_deliveries(
    p_limit integer,
    p_token uuid,
    p_lease double precision,
    p_window double precision,
    p_slack_interval double precision,
    p_telegram_chat_interval double precision,
    p_telegram_bot_interval double precision,
    p_telegram_bot_key text,
    p_email_interval double precision,
    p_webhook_interval double precision
) RETURNS TABLE (
    id uuid, alert_id uuid, purpose text, recipient_id text, recipient_name text, locale text,
    timezone text, channel text, destination text, destination_key text, attempts integer,
    external_ref jsonb, editable boolean, details jsonb,
    revision integer, bucket text, score integer, comment text, account_id text,
    account_name text, segment text, touchpoint text, kind text, respondent jsonb,
    submitted_at timestamptz, acknowledge_due_at timestamptz,
    destination_disabled boolean, lease_expired boolean, send_delay double precision,
    given_back boolean, next_due_in double precision
)
LANGUAGE plpgsql AS $function$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now();
    v_ids uuid[];
    v_channels text[];
    v_keys text[];
    v_expired boolean[];
    v_expired_ids uuid[];
    v_next_due double precision;
    -- paced destinations: key, its next free slot (granted), the projection for rows given
    -- back (never written), and the value read (to write back only what changed)
    v_dest_keys text[];
    v_granted timestamptz[];
    v_projected timestamptz[];
    v_initial timestamptz[];
    v_disabled text[];
    v_delays double precision[];
    v_back timestamptz[];
    v_pace_keys text[];
    v_pace_intervals double precision[];
    v_slot timestamptz;
    v_later timestamptz;
    v_at integer;
    v_i integer;
    v_j integer;
    v_first_back double precision;
    v_changed_keys text[] := '{}';
    v_changed_at timestamptz[] := '{}';
    v_back_ids uuid[] := '{}';
    v_back_at timestamptz[] := '{}';
BEGIN
    WITH due AS (
        SELECT d.id, d.status AS previous_status, d.next_attempt_at AS due_at FROM deliveries AS d
        WHERE d.status IN ('pending', 'in_flight') AND d.next_attempt_at <= v_now
        ORDER BY d.next_attempt_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE deliveries AS d SET
            status = 'in_flight',
            attempts = d.attempts + 1,
            claim_token = p_token,
            next_attempt_at = v_now + make_interval(secs => p_lease),
            updated_at = v_now
        FROM due WHERE d.id = due.id
        RETURNING d.id, d.channel, d.destination_key, due.previous_status, due.due_at
    )
    SELECT array_agg(c.id ORDER BY c.due_at, c.id),
        array_agg(c.channel ORDER BY c.due_at, c.id),
        array_agg(c.destination_key ORDER BY c.due_at, c.id),
        array_agg(c.previous_status = 'in_flight' ORDER BY c.due_at, c.id),
        coalesce(array_agg(c.id) FILTER (WHERE c.previous_status = 'in_flight'), '{}'),
        coalesce(array_agg(c.destination_key) FILTER (WHERE dd.disabled_at IS NOT NULL), '{}'),
        -- The rows claimed here were due, so not after now() in this statement's snapshot.
        (SELECT extract(epoch FROM min(w.next_attempt_at) - v_now) FROM deliveries AS w
         WHERE w.status IN ('pending', 'in_flight') AND w.next_attempt_at > v_now)
    INTO v_ids, v_channels, v_keys, v_expired, v_expired_ids, v_disabled, v_next_due
    FROM claimed AS c LEFT JOIN delivery_destinations AS dd ON dd.key = c.destination_key;

    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    -- Arrays are matched with `= ANY` and `array_position` rather than joined with `unnest`:
    -- the function's plans are cached as generic plans, which cannot size an unnested array
    -- and would scan whole tables; `id = ANY(...)` is an index lookup whatever the size.
    IF cardinality(v_expired_ids) > 0 THEN
        INSERT INTO delivery_attempts (
            delivery_id, number, operation, outcome, started_at, error_class, error_reason,
            error_message)
        SELECT d.id, d.attempts - 1,
            CASE WHEN d.external_ref IS NOT NULL AND d.editable THEN 'edit' ELSE 'send' END,
            'lease_expired', v_now, 'LeaseExpired', 'lease_expired',
            'the previous holder stopped before recording the outcome'
        FROM deliveries AS d WHERE d.id = ANY(v_expired_ids);
    END IF;

    -- Every limit each row counts against (0-second limits are lifted), flattened: row i's
    -- paces are v_pace_keys[2i-1..2i] (NULL where it has fewer).
    v_pace_keys := array_fill(NULL::text, ARRAY[2 * cardinality(v_ids)]);
    v_pace_intervals := array_fill(NULL::double precision, ARRAY[2 * cardinality(v_ids)]);
    FOR v_i IN 1 .. cardinality(v_ids) LOOP
        CONTINUE WHEN v_keys[v_i] = ANY(v_disabled);
        v_at := 2 * v_i - 1;
        CASE v_channels[v_i]
            WHEN 'slack' THEN
                v_pace_intervals[v_at] := p_slack_interval;
            WHEN 'telegram' THEN
                v_pace_intervals[v_at] := p_telegram_chat_interval;
                IF p_telegram_bot_interval > 0 THEN
                    v_pace_keys[v_at + 1] := p_telegram_bot_key;
                    v_pace_intervals[v_at + 1] := p_telegram_bot_interval;
                END IF;
            WHEN 'email' THEN
                v_pace_intervals[v_at] := p_email_interval;
            WHEN 'webhook' THEN
                v_pace_intervals[v_at] := p_webhook_interval;
            ELSE
                NULL;  -- the console channel has no limit
        END CASE;
        IF v_pace_intervals[v_at] > 0 THEN
            v_pace_keys[v_at] := v_keys[v_i];
        END IF;
    END LOOP;

    -- Lock (creating where missing) the destinations in key order; DO UPDATE is what makes
    -- existing rows come back locked too.
    WITH locked AS (
        INSERT INTO delivery_destinations AS dd (key)
        SELECT DISTINCT k FROM unnest(v_pace_keys) AS k WHERE k IS NOT NULL ORDER BY k
        ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
        RETURNING dd.key, greatest(dd.next_allowed_at, v_now) AS next_allowed_at
    )
    SELECT coalesce(array_agg(l.key), '{}'), coalesce(array_agg(l.next_allowed_at), '{}')
    INTO v_dest_keys, v_initial FROM locked AS l;
    v_granted := v_initial;
    v_projected := v_initial;

    v_delays := array_fill(0::double precision, ARRAY[cardinality(v_ids)]);
    v_back := array_fill(NULL::timestamptz, ARRAY[cardinality(v_ids)]);
    FOR v_i IN 1 .. cardinality(v_ids) LOOP
        CONTINUE WHEN v_pace_keys[2 * v_i - 1] IS NULL AND v_pace_keys[2 * v_i] IS NULL;
        v_slot := v_now;
        FOR v_j IN 2 * v_i - 1 .. 2 * v_i LOOP
            IF v_pace_keys[v_j] IS NOT NULL THEN
                v_slot := greatest(
                    v_slot, v_granted[array_position(v_dest_keys, v_pace_keys[v_j])]);
            END IF;
        END LOOP;
        IF v_slot <= v_now + make_interval(secs => p_window) THEN
            v_delays[v_i] := extract(epoch FROM v_slot - v_now);
            FOR v_j IN 2 * v_i - 1 .. 2 * v_i LOOP
                IF v_pace_keys[v_j] IS NOT NULL THEN
                    v_at := array_position(v_dest_keys, v_pace_keys[v_j]);
                    v_granted[v_at] := v_slot + make_interval(secs => v_pace_intervals[v_j]);
                    v_projected[v_at] := greatest(v_projected[v_at], v_granted[v_at]);
                END IF;
            END LOOP;
        ELSE
            v_later := v_slot;
            FOR v_j IN 2 * v_i - 1 .. 2 * v_i LOOP
                IF v_pace_keys[v_j] IS NOT NULL THEN
                    v_later := greatest(
                        v_later, v_projected[array_position(v_dest_keys, v_pace_keys[v_j])]);
                END IF;
            END LOOP;
            v_back[v_i] := v_later;
            FOR v_j IN 2 * v_i - 1 .. 2 * v_i LOOP
                IF v_pace_keys[v_j] IS NOT NULL THEN
                    v_at := array_position(v_dest_keys, v_pace_keys[v_j]);
                    v_projected[v_at] := v_later + make_interval(secs => v_pace_intervals[v_j]);
                END IF;
            END LOOP;
        END IF;
    END LOOP;

    FOR v_j IN 1 .. cardinality(v_dest_keys) LOOP
        IF v_granted[v_j] <> v_initial[v_j] THEN
            v_changed_keys := v_changed_keys || v_dest_keys[v_j];
            v_changed_at := v_changed_at || v_granted[v_j];
        END IF;
    END LOOP;
    IF cardinality(v_changed_keys) > 0 THEN
        UPDATE delivery_destinations AS dd SET
            next_allowed_at = v_changed_at[array_position(v_changed_keys, dd.key::text)],
            updated_at = v_now
        WHERE dd.key = ANY(v_changed_keys);
    END IF;

    FOR v_i IN 1 .. cardinality(v_ids) LOOP
        IF v_back[v_i] IS NOT NULL THEN
            v_back_ids := v_back_ids || v_ids[v_i];
            v_back_at := v_back_at || v_back[v_i];
        END IF;
    END LOOP;
    IF cardinality(v_back_ids) > 0 THEN
        UPDATE deliveries AS d SET
            status = 'pending', attempts = d.attempts - 1,
            next_attempt_at = v_back_at[array_position(v_back_ids, d.id)],
            claim_token = NULL, updated_at = v_now
        WHERE d.id = ANY(v_back_ids) AND d.claim_token = p_token;
        SELECT extract(epoch FROM min(b) - v_now) INTO v_first_back FROM unnest(v_back_at) AS b;
    END IF;

    RETURN QUERY
    SELECT d.id, d.alert_id, d.purpose::text, d.recipient_id::text, d.recipient_name::text,
        d.locale::text, d.timezone::text, d.channel::text, d.destination::text,
        d.destination_key::text, d.attempts, d.external_ref, d.editable, d.details,
        a.revision, a.bucket::text, a.score::integer, a.comment::text, a.account_id::text,
        a.account_name::text, a.segment::text, a.touchpoint::text, a.kind::text, a.respondent,
        a.submitted_at, a.acknowledge_due_at,
        d.destination_key = ANY(v_disabled), v_expired[v.n], v_delays[v.n],
        v_back[v.n] IS NOT NULL, least(v_next_due, v_first_back)
    FROM deliveries AS d
    JOIN alerts AS a ON a.id = d.alert_id
    CROSS JOIN LATERAL (SELECT array_position(v_ids, d.id) AS n) AS v
    WHERE d.id = ANY(v_ids)
    ORDER BY v.n;
END
$function$
"""


def upgrade() -> None:
    op.execute(CLAIM_FUNCTION)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION claim_due_deliveries(integer, uuid, double precision, double precision,"
        " double precision, double precision, double precision, text, double precision,"
        " double precision)"
    )
