"""Alert tables: one alert per `(source, response_id)`, the processed-event ledger, the outbox.

An alert holds the latest revision of its response (score, comment) plus what routing and the
messages need at send time (account name and segment as they were at decision time), so the
delivery loop renders from one row and never re-reads the directory.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from npsloop_alerts.db import Base, TimestampedMixin
from npsloop_shared.contracts import AlertStatus

ID_LENGTH = 128


class Alert(TimestampedMixin, Base):
    __tablename__ = "alerts"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    source: Mapped[str] = mapped_column(String(ID_LENGTH))
    response_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    revision: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    account_known: Mapped[bool] = mapped_column(Boolean)
    account_name: Mapped[str] = mapped_column(String(256))
    segment: Mapped[str | None] = mapped_column(String(64))
    bucket: Mapped[str] = mapped_column(String(16))
    score: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    touchpoint: Mapped[str | None] = mapped_column(String(128))
    respondent: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    response_locale: Mapped[str | None] = mapped_column(String(35))
    attributes: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    owner_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    status: Mapped[str] = mapped_column(String(32), server_default=AlertStatus.OPEN.value)
    acknowledge_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolve_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    matched_rule_ids: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))

    __table_args__ = (
        UniqueConstraint("source", "response_id"),
        Index("ix_alerts_account_id_created_at", "account_id", "created_at"),
        Index("ix_alerts_created_at_id", "created_at", "id"),
    )


class ProcessedEvent(Base):
    """Every `ce_id` the decide handler committed: a redelivered record finds its id here."""

    __tablename__ = "alert_processed_events"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (Index("ix_alert_processed_events_processed_at", "processed_at"),)


class AlertOutboxMessage(Base):
    """An alert lifecycle event for `npsloop.alerts.v1`, written in the deciding transaction.

    The relay publishes unpublished rows in `id` order and marks them; Kafka sees each event at
    least once (consumers dedupe on the `ce_id` header, which is stable per row).
    """

    __tablename__ = "alert_outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249))
    key: Mapped[str] = mapped_column(String(ID_LENGTH))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_alert_outbox_pending", "id", postgresql_where=text("published_at IS NULL")),
    )
