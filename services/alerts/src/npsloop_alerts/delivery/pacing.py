"""Per-destination rate limits ("pacing"), shared by every replica through the database.

Each destination (a Slack webhook or channel, a Telegram chat, the Telegram bot as a whole, an
email address, a webhook URL) has a row in `delivery_destinations` whose `next_allowed_at` is the
earliest moment the next message may leave. A claim locks the rows of the destinations in its
batch (in key order, so replicas never deadlock), hands out send slots `interval` apart, and
writes the advanced `next_allowed_at` back in the same statement. Slots within a short window
are kept and the sender waits for them in memory; later ones go back to the queue due at their
slot, without counting an attempt.

Which limits a message counts against: a Slack message its webhook or channel; a Telegram
message its chat and the bot as a whole (`TELEGRAM_BOT_KEY`); an email its address; a webhook
its URL. A 0-second interval lifts a limit. The arithmetic runs in the database, inside the
claim (`claim_due_deliveries()`, migration 0004), so that a claim is one round trip; this module
holds the names and the policy it is given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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
class PacingPolicy:
    slack_interval: float
    telegram_chat_interval: float
    telegram_bot_interval: float
    email_interval: float
    webhook_interval: float
    window: float  # seconds: slots further away go back to the queue

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> PacingPolicy:
        return cls(
            slack_interval=settings.delivery_slack_interval_seconds,
            telegram_chat_interval=settings.delivery_telegram_chat_interval_seconds,
            telegram_bot_interval=settings.delivery_telegram_bot_interval_seconds,
            email_interval=settings.delivery_email_interval_seconds,
            webhook_interval=settings.delivery_webhook_interval_seconds,
            window=settings.delivery_rate_window_seconds,
        )
