"""Prometheus metrics of consume-and-decide (registered once per registry)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from npsloop_shared.metrics import PerRegistry


@dataclass(frozen=True, slots=True)
class AlertingMetrics:
    responses: Counter
    unknown_accounts: Counter
    unresolved_recipients: Counter
    deliveries_planned: Counter
    events_published: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> AlertingMetrics:
        return cls(
            responses=Counter(
                "npsloop_alerts_responses",
                "Response revisions decided, by outcome (created, updated, stale, duplicate).",
                ["outcome"],
                registry=registry,
            ),
            unknown_accounts=Counter(
                "npsloop_alerts_unknown_account_responses",
                "Alerts created for an account the directory does not know (routed to the team).",
                registry=registry,
            ),
            unresolved_recipients=Counter(
                "npsloop_alerts_unresolved_recipients",
                "Recipients a matching rule asked for that nobody could fill, not even the team.",
                registry=registry,
            ),
            deliveries_planned=Counter(
                "npsloop_alerts_deliveries_planned",
                "Deliveries created by the decide step.",
                registry=registry,
            ),
            events_published=Counter(
                "npsloop_alerts_lifecycle_events_published",
                "alerts.v1 lifecycle events published by the outbox relay.",
                registry=registry,
            ),
        )


alerting_metrics = PerRegistry(AlertingMetrics.register)
