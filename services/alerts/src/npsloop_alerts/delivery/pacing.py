"""Per-destination rate limits ("pacing"), shared by every replica through the database.

Each destination (a Slack webhook or channel, a Telegram chat, the Telegram bot as a whole, an
email address, a webhook URL) has a row in `delivery_destinations` whose `next_allowed_at` is the
earliest moment the next message may leave. A claim locks the rows of the destinations in its
batch (in key order, so replicas never deadlock), hands out send slots `interval` apart, and
writes the advanced `next_allowed_at` back in the same transaction. Slots within a short window
are kept and the sender waits for them in memory; later ones go back to the queue due at their
slot, without counting an attempt. This module is the pure arithmetic of that.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from npsloop_alerts.delivery.settings import DeliverySettings
from npsloop_alerts.routing.rules import Channel

TELEGRAM_BOT_KEY: Final = "telegram:bot"


def destination_key(channel: Channel, destination: str) -> str:
    """A stable, non-secret name for where a message goes.

    Slack webhook URLs and outbound webhook URLs carry secrets in their path, so they appear
    only as a digest; chat ids, channels and email addresses are not secret.
    """
    if channel is Channel.SLACK and destination.startswith(("https://", "http://")):
        return f"slack:webhook:{_digest(destination)}"
    if channel is Channel.WEBHOOK:
        return f"webhook:{_digest(destination)}"
    return f"{channel.value}:{destination.casefold()}"[:255]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Pace:
    """At most one message per `interval` seconds to `key`."""

    key: str
    interval: float


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    slack_interval: float
    telegram_chat_interval: float
    telegram_bot_interval: float
    email_interval: float
    webhook_interval: float
    window: timedelta

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> PacingPolicy:
        return cls(
            slack_interval=settings.delivery_slack_interval_seconds,
            telegram_chat_interval=settings.delivery_telegram_chat_interval_seconds,
            telegram_bot_interval=settings.delivery_telegram_bot_interval_seconds,
            email_interval=settings.delivery_email_interval_seconds,
            webhook_interval=settings.delivery_webhook_interval_seconds,
            window=timedelta(seconds=settings.delivery_rate_window_seconds),
        )

    def paces(self, channel: Channel, key: str) -> list[Pace]:
        """Every limit one message to `key` counts against (0-second limits are lifted)."""
        candidates: list[Pace] = []
        if channel is Channel.SLACK:
            candidates.append(Pace(key, self.slack_interval))
        elif channel is Channel.TELEGRAM:
            candidates += [
                Pace(key, self.telegram_chat_interval),
                Pace(TELEGRAM_BOT_KEY, self.telegram_bot_interval),
            ]
        elif channel is Channel.EMAIL:
            candidates.append(Pace(key, self.email_interval))
        elif channel is Channel.WEBHOOK:
            candidates.append(Pace(key, self.webhook_interval))
        return [pace for pace in candidates if pace.interval > 0]


@dataclass(frozen=True, slots=True)
class PacedItem:
    """One claimed delivery and the limits it counts against."""

    delivery_id: uuid.UUID
    paces: Sequence[Pace]


@dataclass(slots=True)
class SlotPlan:
    """Outcome of pacing one claimed batch."""

    send_at: dict[uuid.UUID, datetime] = field(default_factory=dict)
    deferred_until: dict[uuid.UUID, datetime] = field(default_factory=dict)
    next_allowed_at: dict[str, datetime] = field(default_factory=dict)


def plan_slots(
    items: Iterable[PacedItem],
    next_allowed_at: Mapping[str, datetime],
    now: datetime,
    window: timedelta,
) -> SlotPlan:
    """Give each item the earliest slot all its limits allow, in order.

    Items whose slot falls beyond `now + window` are deferred to that slot (staggered among
    themselves so they do not all return at once); the destination's state only advances for
    slots actually handed out, so a deferred item does not waste a slot.
    """
    plan = SlotPlan()
    granted = dict(next_allowed_at)
    # Deferred items are spread as if granted, but that projection is never written back.
    projected = dict(next_allowed_at)
    horizon = now + window
    for item in items:
        slot = max([now, *(granted.get(p.key, now) for p in item.paces)])
        if slot <= horizon:
            plan.send_at[item.delivery_id] = slot
            for pace in item.paces:
                granted[pace.key] = slot + timedelta(seconds=pace.interval)
                projected[pace.key] = max(projected.get(pace.key, now), granted[pace.key])
            continue
        later = max([slot, *(projected.get(p.key, now) for p in item.paces)])
        plan.deferred_until[item.delivery_id] = later
        for pace in item.paces:
            projected[pace.key] = later + timedelta(seconds=pace.interval)
    plan.next_allowed_at = {
        key: value for key, value in granted.items() if value != next_allowed_at.get(key)
    }
    return plan
