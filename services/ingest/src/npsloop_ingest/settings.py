"""Ingest settings, from `NPSLOOP_*` environment variables.

Sources are configured as one JSON object, e.g.

    NPSLOOP_INGEST_SOURCES='{"api": {"type": "api", "token": "…", "signing_secret": "whsec_…"}}'

A source may have a bearer token, a Standard Webhooks signing secret, or both.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from npsloop_shared.contracts import RESPONSES_TOPIC
from npsloop_shared.kafka.topics import (
    DEFAULT_PARTITIONS,
    DEFAULT_REPLICATION_FACTOR,
    DEFAULT_RETENTION,
    TopicSpec,
    event_topic,
    with_dead_letter,
)
from npsloop_shared.settings import NpsloopSettings
from npsloop_shared.signing import DEFAULT_TOLERANCE_SECONDS, decode_secret

MIN_TOKEN_CHARS = 16

# Source ids become part of `ce_source` (`npsloop/ingest/<id>`), the event's `source` field and a
# metrics label, so they are short, URI-safe names.
SourceId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]


class SourceConfig(BaseModel):
    """One configured source: how it proves who it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["api"] = "api"
    token: SecretStr | None = None
    signing_secret: SecretStr | None = None

    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(f"a token must be at least {MIN_TOKEN_CHARS} characters")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _secret_is_whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_secret(value.get_secret_value())  # raises ValueError with the reason
        return value

    @model_validator(mode="after")
    def _has_a_credential(self) -> Self:
        if self.token is None and self.signing_secret is None:
            raise ValueError("a source needs a token, a signing_secret, or both")
        return self


class IngestSettings(NpsloopSettings):
    """Everything `npsloop-ingest` reads from the environment (see README's configuration table)."""

    kafka_client_id: str = "npsloop-ingest"

    ingest_sources: dict[SourceId, SourceConfig] = Field(default_factory=dict)
    ingest_topic: str = RESPONSES_TOPIC
    # How long a request waits for the broker's ack before answering 503 (nothing accepted).
    ingest_ack_timeout: Annotated[float, Field(gt=0, le=120)] = 5.0
    ingest_retry_after: Annotated[int, Field(ge=1, le=3600)] = 5
    ingest_max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    ingest_linger_ms: Annotated[int, Field(ge=0, le=1000)] = 0
    ingest_signature_tolerance: Annotated[int, Field(ge=1, le=3600)] = DEFAULT_TOLERANCE_SECONDS
    ingest_replay_cache_size: Annotated[int, Field(ge=1)] = 100_000
    ingest_readiness_cache_seconds: Annotated[float, Field(ge=0)] = 2.0
    # How long start-up waits for Kafka before serving anyway (503 until Kafka is there).
    ingest_startup_wait_seconds: Annotated[float, Field(ge=0)] = 5.0

    ingest_topic_partitions: Annotated[int, Field(ge=1)] = DEFAULT_PARTITIONS
    ingest_topic_replication_factor: Annotated[int, Field(ge=1)] = DEFAULT_REPLICATION_FACTOR
    ingest_topic_retention_ms: Annotated[int, Field(ge=60_000)] = int(
        DEFAULT_RETENTION.total_seconds() * 1000
    )

    def topic_specs(self) -> tuple[TopicSpec, TopicSpec]:
        """The responses topic and its `.dlq`, created at start when absent."""
        return with_dead_letter(
            event_topic(
                self.ingest_topic,
                partitions=self.ingest_topic_partitions,
                replication_factor=self.ingest_topic_replication_factor,
                retention=timedelta(milliseconds=self.ingest_topic_retention_ms),
            )
        )
