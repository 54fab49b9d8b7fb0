"""The channel providers the delivery loop sends through, built once from settings.

Each HTTP vendor (Slack, Telegram, outbound webhooks) has its own `httpx.AsyncClient` (keep-alive
pool, never following redirects) and a semaphore of the same size, so a burst to one vendor
neither starves the others nor piles requests up inside the client; email keeps its own SMTP
session pool. `aclose()` releases them all.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TextIO

import httpx
from pydantic import SecretStr

from npsloop_alerts.channels import (
    ConsoleProvider,
    EmailIdentity,
    EmailProvider,
    SlackProvider,
    SmtpSettings,
    TelegramProvider,
    WebhookProvider,
)
from npsloop_alerts.delivery.http_transport import LeanHttpClient
from npsloop_alerts.delivery.settings import DeliverySettings


@dataclass(frozen=True, slots=True)
class ChannelProviders:
    email: EmailProvider
    slack: SlackProvider
    telegram: TelegramProvider
    webhook: WebhookProvider
    console: ConsoleProvider
    clients: tuple[httpx.AsyncClient, ...]
    # Concurrent sends per channel (HTTP vendors: their connection count; email: its pool).
    concurrency: dict[str, asyncio.Semaphore]
    identity: EmailIdentity
    webhook_secret: SecretStr | None

    @classmethod
    def from_settings(
        cls, settings: DeliverySettings, *, console_stream: TextIO | None = None
    ) -> ChannelProviders:
        timeout = settings.delivery_send_timeout_seconds
        connections = settings.delivery_http_connections_per_vendor
        slack_http, telegram_http, webhook_http = (
            _http_client(timeout, connections, lean=settings.delivery_http_transport == "lean")
            for _ in range(3)
        )
        identity = EmailIdentity(
            from_address=settings.email_from_address, from_name=settings.email_from_name
        )
        return cls(
            email=EmailProvider(
                SmtpSettings.from_url(settings.smtp_url, timeout=timeout),
                identity,
                pool_size=settings.smtp_pool_size,
            ),
            slack=SlackProvider(
                slack_http, api_url=settings.slack_api_url, bot_token=settings.slack_bot_token
            ),
            telegram=TelegramProvider(
                telegram_http,
                api_url=settings.telegram_api_url,
                bot_token=settings.telegram_bot_token,
            ),
            webhook=WebhookProvider(webhook_http),
            console=ConsoleProvider(console_stream or sys.stdout),
            clients=(slack_http, telegram_http, webhook_http),
            concurrency={
                "email": asyncio.Semaphore(settings.smtp_pool_size),
                "slack": asyncio.Semaphore(connections),
                "telegram": asyncio.Semaphore(connections),
                "webhook": asyncio.Semaphore(connections),
                "console": asyncio.Semaphore(1),
            },
            identity=identity,
            webhook_secret=settings.webhook_signing_secret,
        )

    @property
    def closed(self) -> bool:
        return any(client.is_closed for client in self.clients)

    async def aclose(self) -> None:
        await self.email.aclose()
        for client in self.clients:
            await client.aclose()


def _http_client(timeout: float, connections: int, *, lean: bool) -> httpx.AsyncClient:
    if lean:
        return LeanHttpClient(timeout=timeout, max_connections=connections)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits, follow_redirects=False)
