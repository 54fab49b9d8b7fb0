"""Delivery tables: the work queue (`deliveries`), its history (`delivery_attempts`) and the
per-destination state that paces and disables (`delivery_destinations`).

A delivery is unique per `(alert, recipient, channel, purpose)`: the deciding transaction inserts
with `ON CONFLICT DO NOTHING`, so a redelivered Kafka record or a later revision never creates a
second message. Its life:

    pending ──claim──▶ in_flight ──sent──▶ sent ──(newer revision, editable)──▶ pending (edit)
       ▲                  │ transient: pending again at backoff / retry hint
       │                  │ permanent or attempts exhausted: dead ──redrive──▶ pending
       └──lease expired───┘ (the process died mid-send; claimed again)

`next_attempt_at` is when a pending row is due *and*, while in flight, when its lease expires, so
one partial index serves both "due" and "abandoned".
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from npsloop_alerts.db import Base, TimestampedMixin

ID_LENGTH = 128


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    DEAD = "dead"


class DeliveryPurpose(StrEnum):
    """`alert`: the alert itself. `destination_disabled`: telling a manager a destination broke."""

    ALERT = "alert"
    DESTINATION_DISABLED = "destination_disabled"


class AttemptOutcome(StrEnum):
    SENT = "sent"
    EDITED = "edited"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    LEASE_EXPIRED = "lease_expired"
    DESTINATION_DISABLED = "destination_disabled"


class Delivery(TimestampedMixin, Base):
    __tablename__ = "deliveries"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    # Looked up through the unique (alert_id, recipient_id, channel, purpose) index.
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32), server_default=DeliveryPurpose.ALERT.value)
    recipient_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    recipient_role: Mapped[str] = mapped_column(String(32))
    recipient_name: Mapped[str] = mapped_column(String(256))
    locale: Mapped[str] = mapped_column(String(16))
    timezone: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    # The address as routing found it (email, chat id, Slack channel or webhook URL). Webhook
    # URLs are secrets: the API shows `destination_key` instead.
    destination: Mapped[str] = mapped_column(Text)
    destination_key: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), server_default=DeliveryStatus.PENDING.value)
    # Tries of the current operation (first send, or an edit); reset when a new operation starts.
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Email (and Slack webhooks) wait for the comment of an incomplete response, up to the hold.
    awaiting_comment: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # The alert revision this delivery must show; `rendered_revision` is what it last showed.
    content_revision: Mapped[int] = mapped_column(Integer)
    rendered_revision: Mapped[int | None] = mapped_column(Integer)
    external_ref: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The sent message can be edited in place (Slack bot mode, Telegram): a newer revision
    # becomes an edit instead of being left unseen.
    editable: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # What a non-alert message is about (for `destination_disabled`: which destination, why).
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_error_class: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dead_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("alert_id", "recipient_id", "channel", "purpose"),
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status IN ('pending', 'in_flight')"),
        ),
        Index("ix_deliveries_status_created_at", "status", "created_at"),
    )


class DeliveryAttempt(Base):
    """One try: when, what, how it ended, how long it took. Error text never holds secrets."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    vendor_status: Mapped[int | None] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(128))
    error_reason: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_after_seconds: Mapped[float | None] = mapped_column(Float)
    rendered_revision: Mapped[int | None] = mapped_column(Integer)


class DeliveryDestination(Base):
    """Pace and health of one destination, shared by every replica."""

    __tablename__ = "delivery_destinations"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    next_allowed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    consecutive_permanent_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
