"""API shapes of alerts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from npsloop_alerts.delivery.schemas import DeliveryOut


class AlertOut(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: uuid.UUID
    source: str
    response_id: str
    revision: int = Field(description="The latest response revision the alert holds.")
    account_id: str
    account_known: bool = Field(description="False: the directory had no such account.")
    account_name: str
    segment: str | None
    bucket: str
    score: int
    comment: str | None
    kind: str
    touchpoint: str | None
    respondent: dict[str, Any] | None
    response_locale: str | None
    attributes: dict[str, str]
    submitted_at: datetime
    received_at: datetime
    owner_id: str | None
    status: str
    acknowledge_due_at: datetime | None
    resolve_due_at: datetime | None
    matched_rule_ids: list[str]
    created_at: datetime
    updated_at: datetime


class AlertDetailOut(AlertOut):
    deliveries: list[DeliveryOut]
