"""Routing metrics. Callers record a decision once it has been committed (not on retries)."""

from __future__ import annotations

from prometheus_client import Counter

from npsloop_alerts.routing.engine import RoutingDecision

UNKNOWN_ACCOUNT = Counter(
    "npsloop_alerts_routing_unknown_account",
    "Responses for an account_id the directory does not know (routed to the team fallback).",
)
FALLBACK_TARGETS = Counter(
    "npsloop_alerts_routing_fallback_targets",
    "Targets filled by a fallback (backup owner or team) instead of the person a rule asked for.",
    ["role"],
)
UNRESOLVED = Counter(
    "npsloop_alerts_routing_unresolved",
    "Recipients a matching rule asked for that nobody could fill, not even the team fallback.",
)
UNROUTED = Counter(
    "npsloop_alerts_routing_unrouted",
    "Responses with no target at all (the alert is still recorded, visible under /v1/alerts).",
)


def record_decision_metrics(decision: RoutingDecision) -> None:
    if not decision.account_known:
        UNKNOWN_ACCOUNT.inc()
    for target in decision.targets:
        if target.via_fallback:
            FALLBACK_TARGETS.labels(role=target.role.value).inc()
    if decision.unresolved:
        UNRESOLVED.inc(len(decision.unresolved))
    if not decision.targets:
        UNROUTED.inc()
