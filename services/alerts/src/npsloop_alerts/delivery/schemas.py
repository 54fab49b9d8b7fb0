"""API shapes of deliveries and their attempts. Webhook URLs (secrets) never leave the service."""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from npsloop_alerts.delivery.models import Delivery, DeliveryAttempt


class DeliveryOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    alert_id: uuid.UUID
    purpose: str = Field(description="`alert`, or `destination_disabled` (a notice to a manager).")
    recipient_id: str
    recipient_role: str
    recipient_name: str
    channel: str
    destination: str = Field(
        description="Email address, chat or channel id; URLs are shown as their host only."
    )
    destination_key: str
    status: str = Field(description="pending, in_flight, sent or dead.")
    attempts: int = Field(description="Tries of the current operation (send, or an edit).")
    next_attempt_at: datetime | None = Field(description="When it is due, while pending.")
    awaiting_comment: bool
    content_revision: int
    rendered_revision: int | None = Field(description="The alert revision last delivered.")
    external_id: str | None = Field(description="The vendor's id of the message, once sent.")
    last_error_class: str | None
    last_error: str | None
    sent_at: datetime | None
    dead_at: datetime | None
    created_at: datetime
    updated_at: datetime


class AttemptOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    number: int
    operation: str
    outcome: str
    started_at: datetime
    latency_ms: float | None
    vendor_status: int | None
    error_class: str | None
    error_reason: str | None
    error_message: str | None
    retry_after_seconds: float | None
    rendered_revision: int | None


class DeliveryDetailOut(DeliveryOut):
    attempt_history: list[AttemptOut]


class RedriveOut(BaseModel):
    redriven: list[uuid.UUID] = Field(description="Dead deliveries now pending again.")


def shown_destination(channel: str, destination: str) -> str:
    if destination.startswith(("https://", "http://")):
        parts = urlsplit(destination)
        return f"{parts.scheme}://{parts.hostname or ''}/…"
    return destination


def _external_id(delivery: Delivery) -> str | None:
    ref = delivery.external_ref or {}
    for field in ("message_id", "ts", "webhook_id", "sequence"):
        if ref.get(field) is not None:
            chat = ref.get("chat_id") or ref.get("channel")
            value = str(ref[field])
            return f"{chat}/{value}" if chat else value
    return None


def delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(**_delivery_fields(delivery))


def delivery_detail_out(delivery: Delivery, attempts: list[DeliveryAttempt]) -> DeliveryDetailOut:
    return DeliveryDetailOut(
        **_delivery_fields(delivery),
        attempt_history=[
            AttemptOut.model_validate(attempt, from_attributes=True) for attempt in attempts
        ],
    )


def _delivery_fields(delivery: Delivery) -> dict[str, object]:
    waiting = delivery.status in {"pending", "in_flight"}
    return {
        "id": delivery.id,
        "alert_id": delivery.alert_id,
        "purpose": delivery.purpose,
        "recipient_id": delivery.recipient_id,
        "recipient_role": delivery.recipient_role,
        "recipient_name": delivery.recipient_name,
        "channel": delivery.channel,
        "destination": shown_destination(delivery.channel, delivery.destination),
        "destination_key": delivery.destination_key,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at if waiting else None,
        "awaiting_comment": delivery.awaiting_comment,
        "content_revision": delivery.content_revision,
        "rendered_revision": delivery.rendered_revision,
        "external_id": _external_id(delivery),
        "last_error_class": delivery.last_error_class,
        "last_error": delivery.last_error,
        "sent_at": delivery.sent_at,
        "dead_at": delivery.dead_at,
        "created_at": delivery.created_at,
        "updated_at": delivery.updated_at,
    }
