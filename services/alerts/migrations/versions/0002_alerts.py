"""Alerts, the processed-event ledger, the alert outbox, deliveries, attempts, destinations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

A statement-level trigger NOTIFYs `npsloop_deliveries` whenever deliveries are inserted, so the
delivery loops of every replica wake at the deciding transaction's commit instead of polling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(128)
TZ = sa.DateTime(timezone=True)


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
    ]


def _jsonb(name: str, default: str | None = None, *, nullable: bool = False) -> sa.Column[Any]:
    server_default = sa.text(default) if default else None
    return sa.Column(name, postgresql.JSONB(), server_default=server_default, nullable=nullable)


def upgrade() -> None:
    _create_alerts()
    _create_processed_events()
    _create_alert_outbox()
    _create_deliveries()
    _create_attempts()
    _create_destinations()
    _create_notify_trigger()


def _create_alerts() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("source", ID, nullable=False),
        sa.Column("response_id", ID, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("account_known", sa.Boolean(), nullable=False),
        sa.Column("account_name", sa.String(256), nullable=False),
        sa.Column("segment", sa.String(64)),
        sa.Column("bucket", sa.String(16), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("touchpoint", sa.String(128)),
        _jsonb("respondent", nullable=True),
        sa.Column("response_locale", sa.String(35)),
        _jsonb("attributes", "'{}'::jsonb"),
        sa.Column("submitted_at", TZ, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("owner_id", ID),
        sa.Column("status", sa.String(32), server_default="open", nullable=False),
        sa.Column("acknowledge_due_at", TZ),
        sa.Column("resolve_due_at", TZ),
        _jsonb("matched_rule_ids", "'[]'::jsonb"),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("source", "response_id", name="uq_alerts_source_response_id"),
    )
    op.create_index("ix_alerts_account_id_created_at", "alerts", ["account_id", "created_at"])
    op.create_index("ix_alerts_created_at_id", "alerts", ["created_at", "id"])


def _create_processed_events() -> None:
    op.create_table(
        "alert_processed_events",
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("processed_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_alert_processed_events"),
    )
    op.create_index(
        "ix_alert_processed_events_processed_at", "alert_processed_events", ["processed_at"]
    )


def _create_alert_outbox() -> None:
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", ID, nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        _jsonb("headers", "'[]'::jsonb"),
        sa.Column("created_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", TZ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_outbox"),
    )
    op.create_index(
        "ix_alert_outbox_pending",
        "alert_outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )


def _create_deliveries() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("alert_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("purpose", sa.String(32), server_default="alert", nullable=False),
        sa.Column("recipient_id", ID, nullable=False),
        sa.Column("recipient_role", sa.String(32), nullable=False),
        sa.Column("recipient_name", sa.String(256), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("destination_key", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("not_before", TZ, nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column(
            "awaiting_comment", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("content_revision", sa.Integer(), nullable=False),
        sa.Column("rendered_revision", sa.Integer()),
        _jsonb("external_ref", nullable=True),
        sa.Column("editable", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _jsonb("details", nullable=True),
        sa.Column("claim_token", postgresql.UUID(as_uuid=True)),
        sa.Column("last_error_class", sa.String(128)),
        sa.Column("last_error", sa.Text()),
        sa.Column("sent_at", TZ),
        sa.Column("dead_at", TZ),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_deliveries_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "alert_id",
            "recipient_id",
            "channel",
            "purpose",
            name="uq_deliveries_alert_id_recipient_id_channel_purpose",
        ),
    )
    op.create_index("ix_deliveries_alert_id", "deliveries", ["alert_id"])
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status IN ('pending', 'in_flight')"),
    )
    op.create_index("ix_deliveries_status_created_at", "deliveries", ["status", "created_at"])


def _create_attempts() -> None:
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("delivery_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("vendor_status", sa.Integer()),
        sa.Column("error_class", sa.String(128)),
        sa.Column("error_reason", sa.String(128)),
        sa.Column("error_message", sa.Text()),
        sa.Column("retry_after_seconds", sa.Float()),
        sa.Column("rendered_revision", sa.Integer()),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_attempts"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name="fk_delivery_attempts_delivery_id_deliveries",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_delivery_attempts_delivery_id", "delivery_attempts", ["delivery_id"])


def _create_destinations() -> None:
    op.create_table(
        "delivery_destinations",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("next_allowed_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.Column(
            "consecutive_permanent_failures",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("disabled_at", TZ),
        sa.Column("disabled_reason", sa.Text()),
        sa.Column("updated_at", TZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_delivery_destinations"),
    )


def _create_notify_trigger() -> None:
    op.execute(
        """
        CREATE FUNCTION npsloop_notify_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('npsloop_deliveries', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER deliveries_inserted AFTER INSERT ON deliveries
        FOR EACH STATEMENT EXECUTE FUNCTION npsloop_notify_deliveries()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS deliveries_inserted ON deliveries")
    op.execute("DROP FUNCTION IF EXISTS npsloop_notify_deliveries()")
    op.drop_table("delivery_destinations")
    op.drop_table("delivery_attempts")
    op.drop_table("deliveries")
    op.drop_table("alert_outbox")
    op.drop_table("alert_processed_events")
    op.drop_table("alerts")
