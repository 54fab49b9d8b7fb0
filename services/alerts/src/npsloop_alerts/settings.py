"""Alerts service settings (`NPSLOOP_*` environment variables)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from npsloop_alerts.alerting.settings import AlertingSettings
from npsloop_alerts.delivery.settings import DeliverySettings
from npsloop_alerts.routing.engine import ChannelConfig
from npsloop_alerts.routing.rules import Channel
from npsloop_shared.settings import NpsloopSettings

# Values that show up in examples and must never guard a real deployment.
_PLACEHOLDER_SECRETS = frozenset({"changeme", "changethis", "secret", "admin", "token", "password"})
MIN_ADMIN_TOKEN_CHARS = 16


class AlertsSettings(AlertingSettings, DeliverySettings, NpsloopSettings):
    """Everything the alerts process needs; the lifespan reads it once at start-up.

    Consume-and-decide (`AlertingSettings`) and delivery (`DeliverySettings`) keep their own
    fields beside their code; this class combines them.
    """

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/npsloop"
    database_pool_size: Annotated[int, Field(ge=1, le=100)] = 10

    # Bearer token for the admin API (`/v1/people`, `/v1/accounts`, `/v1/rules`, `/v1/team`).
    # Unset → the admin API answers 503 rather than being open.
    admin_token: SecretStr | None = None

    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8001

    # Directory publication (`npsloop.accounts.v1`) through the transactional outbox.
    accounts_topic_partitions: Annotated[int, Field(ge=1)] = 6
    accounts_topic_replication_factor: Annotated[int, Field(ge=1)] = 1
    outbox_poll_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 0.2
    outbox_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    outbox_retention_hours: Annotated[float, Field(gt=0)] = 24 * 7
    kafka_send_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0

    # Channels this deployment can send on; routing never targets a channel outside this set.
    # Comma-separated in the environment: `NPSLOOP_ALERTS_ENABLED_CHANNELS=email,slack,console`.
    alerts_enabled_channels: Annotated[list[Channel], NoDecode] = Field(
        default_factory=lambda: [Channel.EMAIL, Channel.SLACK, Channel.TELEGRAM, Channel.WEBHOOK]
    )
    # Slack bot mode (chat.postMessage to `slack_channel`) instead of incoming webhooks.
    alerts_slack_bot_mode: bool = False

    @field_validator("alerts_enabled_channels", mode="before")
    @classmethod
    def _split_channels(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("admin_token")
    @classmethod
    def _refuse_placeholder_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if token.lower() in _PLACEHOLDER_SECRETS or len(token) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"NPSLOOP_ADMIN_TOKEN must be a random value of at least "
                f"{MIN_ADMIN_TOKEN_CHARS} characters, not a placeholder"
            )
        return value

    def channel_config(self) -> ChannelConfig:
        return ChannelConfig(
            enabled=frozenset(self.alerts_enabled_channels),
            slack_bot_mode=self.alerts_slack_bot_mode,
        )
