"""Settings base: every service subclasses it, so the prefix and secret handling agree."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class NpsloopSettings(BaseSettings):
    """Common settings, read from `NPSLOOP_*` environment variables (and `.env` when present).

    Secrets are `SecretStr` in subclasses so `repr()` and logs show `**********`.
    """

    model_config = SettingsConfigDict(
        env_prefix="NPSLOOP_", env_file=".env", extra="ignore", frozen=True
    )

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_client_id: str = "npsloop"
    log_level: str = "INFO"
    log_format: str = "json"
