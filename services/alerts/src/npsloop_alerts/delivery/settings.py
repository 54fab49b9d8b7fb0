"""Delivery loop settings (`NPSLOOP_DELIVERY_*`): retry schedule, leases, rate limits, batching.

Defaults follow the vendors' published limits (../shared/APIS.md); tests shorten the waits and the
benchmark lifts the rate limits, both through these settings only.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr

from npsloop_shared.settings import NpsloopSettings

PositiveSeconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]


class DeliverySettings(NpsloopSettings):
    """How deliveries are claimed, sent, retried and paced, and where the channels point."""

    # Channels. Vendor base URLs are settings so tests and staging point at local servers.
    smtp_url: str = "smtp://127.0.0.1:1025"
    email_from_address: str = "alerts@npsloop.localhost"
    email_from_name: str = "npsloop"
    smtp_pool_size: Annotated[int, Field(ge=1, le=100)] = 8
    slack_api_url: str = "https://slack.com/api"
    slack_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_bot_token: SecretStr | None = None
    # `whsec_…` secret signing outbound webhooks (Standard Webhooks).
    webhook_signing_secret: SecretStr | None = None
    # Concurrent HTTP sends (and keep-alive connections) per vendor: Slack, Telegram, webhooks.
    # More sends than this wait their turn outside the HTTP client, whose pool bookkeeping
    # costs grow with the number of queued requests times connections.
    delivery_http_connections_per_vendor: Annotated[int, Field(ge=1, le=1_000)] = 32
    # `lean`: keep-alive HTTP/1.1 on asyncio with httptools (a fraction of the CPU per send);
    # `httpx`: httpx's stock transport (proxies from the environment, HTTP/2 not enabled).
    delivery_http_transport: Literal["lean", "httpx"] = "lean"

    # Retries: attempt n (1-based) failing transiently waits
    # min(max, base * factor**(n-1)) * (1 ± jitter), unless the vendor sent a retry hint.
    delivery_max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    delivery_backoff_base_seconds: PositiveSeconds = 2.0
    delivery_backoff_factor: Annotated[float, Field(ge=1)] = 3.0
    delivery_backoff_max_seconds: PositiveSeconds = 30 * 60
    delivery_backoff_jitter: Annotated[float, Field(ge=0, le=1)] = 0.2
    # A vendor asking for more than this is treated as "later" but capped, so one bad header
    # cannot park a delivery for days.
    delivery_max_retry_after_seconds: PositiveSeconds = 3600

    # Claiming: a claimed delivery is leased; if the process dies mid-send, the lease expires
    # and another replica (or the restarted one) claims it again.
    delivery_lease_seconds: PositiveSeconds = 60
    delivery_send_timeout_seconds: PositiveSeconds = 15
    delivery_claim_batch_size: Annotated[int, Field(ge=1, le=1000)] = 100
    delivery_max_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 256
    # Safety net when a NOTIFY is missed (e.g. the listening connection dropped).
    delivery_poll_interval_seconds: PositiveSeconds = 1.0
    # Outcomes finishing within this long of each other are recorded in one write (group
    # commit). Nobody waits for the write (the message has left), and each write has a fixed
    # cost in the process and the database that a few rows more barely change; but a process
    # killed inside the window sends those messages again after their lease (see loop.py).
    delivery_record_linger_seconds: Annotated[float, Field(ge=0, le=1)] = 0.025

    # Per-destination pacing (seconds between two messages; 0 lifts the limit).
    delivery_slack_interval_seconds: NonNegativeSeconds = 1.0
    delivery_telegram_chat_interval_seconds: NonNegativeSeconds = 1.0
    delivery_telegram_bot_interval_seconds: NonNegativeSeconds = 1 / 30
    delivery_email_interval_seconds: NonNegativeSeconds = 0.0
    delivery_webhook_interval_seconds: NonNegativeSeconds = 0.0
    # Messages that fit within this window of their destination's pace are held in memory and
    # sent on time; later ones go back to the queue with their due time.
    delivery_rate_window_seconds: PositiveSeconds = 2.0

    # After this many consecutive permanent failures a destination is disabled and the account's
    # manager is told by email.
    delivery_disable_after_permanent_failures: Annotated[int, Field(ge=1)] = 3

    # How often queue depth and the age of the oldest pending delivery are refreshed for /metrics.
    delivery_metrics_interval_seconds: PositiveSeconds = 5.0
