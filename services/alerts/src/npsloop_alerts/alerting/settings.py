"""Consume-and-decide settings (`NPSLOOP_ALERTS_*`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr

from npsloop_alerts.alerting.sla import SlaPolicy
from npsloop_shared.contracts import ALERTS_TOPIC, RESPONSES_TOPIC
from npsloop_shared.settings import NpsloopSettings


class AlertingSettings(NpsloopSettings):
    alerts_consumer_group: str = "npsloop-alerts"
    # Group members per process. A member decides all the records of a poll in one transaction,
    # so a backlog makes bigger batches rather than waiting; extra members mostly add fetches
    # and commits (measured in `make bench-alerts`: 1 member beat 2 and 6 at 100/s). More
    # than the topic's partitions would sit idle; scale out with processes instead.
    alerts_consumer_instances: Annotated[int, Field(ge=1, le=64)] = 1
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
