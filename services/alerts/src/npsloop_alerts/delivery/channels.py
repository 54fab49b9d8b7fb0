"""The channel providers the delivery loop sends through, built once from settings.

One shared `httpx.AsyncClient` (keep-alive pool, never following redirects) serves Slack,
Telegram and outbound webhooks; email keeps its own SMTP session pool. `aclose()` releases both.
"""

from __future__ import annotations

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
from npsloop_alerts.delivery.settings import DeliverySettings


@dataclass(frozen=True, slots=True)
class ChannelProviders:
    email: EmailProvider
    slack: SlackProvider
    telegram: TelegramProvider
    webhook: WebhookProvider
    console: ConsoleProvider
    http: httpx.AsyncClient
    identity: EmailIdentity
    webhook_secret: SecretStr | None

    @classmethod
    def from_settings(
        cls, settings: DeliverySettings, *, console_stream: TextIO | None = None
    ) -> ChannelProviders:
        timeout = settings.delivery_send_timeout_seconds
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=settings.delivery_http_max_connections,
                max_keepalive_connections=settings.delivery_http_max_connections,
            ),
            follow_redirects=False,
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
                http, api_url=settings.slack_api_url, bot_token=settings.slack_bot_token
            ),
            telegram=TelegramProvider(
                http, api_url=settings.telegram_api_url, bot_token=settings.telegram_bot_token
            ),
            webhook=WebhookProvider(http),
            console=ConsoleProvider(console_stream or sys.stdout),
            http=http,
            identity=identity,
            webhook_secret=settings.webhook_signing_secret,
        )

    async def aclose(self) -> None:
        await self.email.aclose()
        await self.http.aclose()
