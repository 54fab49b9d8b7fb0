"""Directory tables: people, accounts, the team singleton and the publication outbox."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Time,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from npsloop_alerts.db import Base, TimestampedMixin

ID_LENGTH = 128
TEAM_ROW_ID = 1


class Person(TimestampedMixin, Base):
    """Someone (or a shared destination such as a #wins channel) alerts can reach."""

    __tablename__ = "people"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    slack_webhook_url: Mapped[str | None] = mapped_column(String(2048))
    slack_channel: Mapped[str | None] = mapped_column(String(128))
    telegram_chat_id: Mapped[str | None] = mapped_column(String(64))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    locale: Mapped[str] = mapped_column(String(16), server_default="en")
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    quiet_hours_start: Mapped[time | None] = mapped_column(Time())
    quiet_hours_end: Mapped[time | None] = mapped_column(Time())
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))

    __table_args__ = (
        CheckConstraint(
            "(quiet_hours_start IS NULL) = (quiet_hours_end IS NULL)", name="quiet_hours_pair"
        ),
    )


class Account(TimestampedMixin, Base):
    """A customer account; `id` is the `account_id` responses carry."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    segment: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(16), server_default="en")
    timezone: Mapped[str] = mapped_column(String(64), server_default="UTC")
    owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("people.id", ondelete="RESTRICT"), index=True
    )
    backup_owner_id: Mapped[str | None] = mapped_column(
        ForeignKey("people.id", ondelete="RESTRICT"), index=True
    )
    manager_id: Mapped[str | None] = mapped_column(
        ForeignKey("people.id", ondelete="RESTRICT"), index=True
    )
    attributes: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Bumped on every effective change; consumers of accounts.v1 can ignore older versions.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))


class Team(Base):
    """The singleton team configuration (row id 1, created by the migration)."""

    __tablename__ = "team"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    fallback_person_id: Mapped[str | None] = mapped_column(
        ForeignKey("people.id", ondelete="RESTRICT")
    )
    wins_person_id: Mapped[str | None] = mapped_column(ForeignKey("people.id", ondelete="RESTRICT"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (CheckConstraint(f"id = {TEAM_ROW_ID}", name="singleton"),)
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - read by the declarative scan


class OutboxMessage(Base):
    """A Kafka record to publish, written in the same transaction as the change it describes.

    The relay publishes rows in `id` order and sets `published_at`; a `value` of NULL is a
    tombstone (the account was deleted).
    """

    __tablename__ = "directory_outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249))
    key: Mapped[str] = mapped_column(String(ID_LENGTH))
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_directory_outbox_pending",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
    )
