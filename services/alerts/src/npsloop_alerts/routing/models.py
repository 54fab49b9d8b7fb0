"""Routing rules as stored: the editable definition lives in JSONB, validated on write."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from npsloop_alerts.db import Base, TimestampedMixin


class RoutingRule(TimestampedMixin, Base):
    __tablename__ = "routing_rules"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    priority: Mapped[int] = mapped_column(Integer, server_default=text("100"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    stop_processing: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    match: Mapped[dict[str, Any]] = mapped_column(JSONB)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))

    __table_args__ = (Index("ix_routing_rules_priority_id", "priority", "id"),)
