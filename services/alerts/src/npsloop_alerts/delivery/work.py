"""What the delivery loop passes around: a claimed delivery and the outcome of one attempt."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from npsloop_alerts.channels import SendReceipt


class Operation(StrEnum):
    SEND = "send"
    EDIT = "edit"


class Verdict(StrEnum):
    """How an attempt ended, as far as the queue is concerned."""

    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    DESTINATION_DISABLED = "destination_disabled"


@dataclass(frozen=True, slots=True)
class AlertContent:
    """The alert as it was when the delivery was claimed (what the message will show)."""

    revision: int
    bucket: str
    score: int
    comment: str | None
    account_id: str
    account_name: str
    segment: str | None
    touchpoint: str | None
    kind: str
    respondent: dict[str, Any] | None
    submitted_at: datetime
    acknowledge_due_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A delivery leased to this process under `claim_token`.

    `attempts` already counts this attempt. `send_delay` is how long to wait for the
    destination's pace slot before sending.
    """

    id: uuid.UUID
    claim_token: uuid.UUID
    alert_id: uuid.UUID
    purpose: str
    recipient_id: str
    recipient_name: str
    locale: str
    timezone: str
    channel: str
    destination: str
    destination_key: str
    attempts: int
    external_ref: dict[str, Any] | None
    editable: bool
    details: dict[str, Any] | None
    destination_disabled: bool
    alert: AlertContent
    send_delay: float = 0.0

    @property
    def operation(self) -> Operation:
        """Edit in place once a message exists and can be edited; otherwise send."""
        return Operation.EDIT if self.external_ref is not None and self.editable else Operation.SEND


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """One finished attempt, ready to be recorded."""

    delivery: ClaimedDelivery
    operation: Operation
    verdict: Verdict
    started_at: datetime
    latency_ms: float | None = None
    rendered_revision: int | None = None
    receipt: SendReceipt | None = None
    editable: bool = False
    vendor_status: int | None = None
    error_class: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    retry_after: float | None = None
    # Permanent failures that say something about the destination (chat not found, channel
    # archived) count towards disabling it; our own configuration errors do not.
    counts_against_destination: bool = False
