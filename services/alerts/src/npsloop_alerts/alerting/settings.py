"""Consume-and-decide settings (`NPSLOOP_ALERTS_*`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from npsloop_alerts.alerting.sla import SlaPolicy
from npsloop_shared.contracts import ALERTS_TOPIC, RESPONSES_TOPIC
from npsloop_shared.kafka.consumer import ConsumerTuning
from npsloop_shared.settings import NpsloopSettings

# Larger than any poll this wait gathers, so the wait, not the size, ends a fetch.
LINGERING_FETCH_MIN_BYTES = 1 << 20


class AlertingSettings(NpsloopSettings):
    alerts_consumer_group: str = "npsloop-alerts"
    # Group members per process. A member decides all the records of a poll in one transaction,
    # so a backlog makes bigger batches rather than waiting; extra members mostly add fetches
    # and commits (measured in `make bench-alerts`: 1 member beat 2 and 6 at 100/s). More
    # than the topic's partitions would sit idle; scale out with processes instead.
    alerts_consumer_instances: Annotated[int, Field(ge=1, le=64)] = 1
    # The broker holds each fetch this long (ms) to gather responses, unless ~1 MiB arrive
    # first. Each poll costs a decide transaction and a delivery claim whatever its size, so
    # a steady stream answered record by record spends most of its CPU on rounds, not on
    # responses: at 200/s, 40 ms cut the alerts processes' CPU per response from ~4.5 to
    # ~3.2 ms and PostgreSQL's from ~1.9 to ~1.2 ms (`bench/alerts.py`, README), for ~20 ms
    # more latency on average. 0 answers every record at once (and polls every 500 ms when idle).
    alerts_fetch_linger_ms: Annotated[int, Field(ge=0, le=500)] = 40
    alerts_responses_topic: str = RESPONSES_TOPIC
    alerts_events_topic: str = ALERTS_TOPIC
    # An email (and a Slack incoming-webhook post) for a response without a comment waits this
    # long for the comment revision, so score-then-comment arrives as one complete message.
    alerts_email_hold_seconds: Annotated[float, Field(ge=0)] = 60.0
    # JSON, see `npsloop_alerts.alerting.sla`.
    alerts_sla_policy: SlaPolicy = Field(default_factory=SlaPolicy)
    # Where the "read the full comment" link of a truncated message points.
    alerts_public_base_url: str = "http://127.0.0.1:8001"
    # Key of the signed links to an alert's page (see `alerting/links.py`); unset → derived
    # from NPSLOOP_ADMIN_TOKEN. Links stay valid this many days.
    alerts_link_secret: SecretStr | None = None
    alerts_link_ttl_days: Annotated[float, Field(gt=0)] = 90.0
    # How long `ce_id`s are kept for dedupe (longer than any topic retention).
    alerts_processed_event_retention_days: Annotated[float, Field(gt=0)] = 30.0

    def consumer_tuning(self) -> ConsumerTuning:
        if self.alerts_fetch_linger_ms == 0:
            return ConsumerTuning()
        return ConsumerTuning(
            fetch_min_bytes=LINGERING_FETCH_MIN_BYTES,
            fetch_max_wait_ms=self.alerts_fetch_linger_ms,
        )
