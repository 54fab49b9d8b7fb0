"""From attempt outcomes to queue changes (pure): new status and due time, attempt rows, and
what each destination learnt (a success clears its failure run, a permanent failure extends
it, a retry hint holds every message to it back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from npsloop_alerts.delivery.backoff import RetryPolicy
from npsloop_alerts.delivery.repository import AttemptRow, ResultRow
from npsloop_alerts.delivery.work import Operation, SendOutcome, Verdict


@dataclass(slots=True)
class Settlement:
    results: list[ResultRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    # Destinations whose failure run restarts (a success was seen)…
    reset_keys: set[str] = field(default_factory=set)
    # …and permanent failures counted after that point.
    failure_counts: dict[str, int] = field(default_factory=dict)
    failure_reasons: dict[str, str] = field(default_factory=dict)
    first_failure: dict[str, SendOutcome] = field(default_factory=dict)
    retry_hints: dict[str, float] = field(default_factory=dict)


def settle(outcomes: Iterable[SendOutcome], policy: RetryPolicy) -> Settlement:
    settlement = Settlement()
    for outcome in outcomes:
        settlement.results.append(_result(outcome, policy))
        settlement.attempts.append(_attempt(outcome))
        _learn(settlement, outcome)
    return settlement


def final_status(outcome: SendOutcome, policy: RetryPolicy) -> tuple[str, float | None]:
    """The delivery's next status and, when pending again, seconds until it is due."""
    if outcome.verdict is Verdict.SENT:
        return "sent", None
    if outcome.verdict is Verdict.TRANSIENT and not policy.exhausted(outcome.delivery.attempts):
        return "pending", policy.delay_seconds(outcome.delivery.attempts, outcome.retry_after)
    return "dead", None


def _result(outcome: SendOutcome, policy: RetryPolicy) -> ResultRow:
    status, delay = final_status(outcome, policy)
    sent = outcome.verdict is Verdict.SENT
    receipt = outcome.receipt
    return ResultRow(
        delivery_id=outcome.delivery.id,
        claim_token=outcome.delivery.claim_token,
        status=status,
        delay=delay,
        external_ref=receipt.ref.model_dump(mode="json") if sent and receipt else None,
        editable=outcome.editable,
        rendered_revision=outcome.rendered_revision if sent else None,
        error_class=None if sent else outcome.error_class,
        error=None if sent else _error_text(outcome),
        sent=sent,
    )


def _error_text(outcome: SendOutcome) -> str | None:
    if outcome.error_message is None:
        return None
    if outcome.verdict is Verdict.TRANSIENT and outcome.delivery.attempts > 0:
        return f"{outcome.error_message} (attempt {outcome.delivery.attempts})"
    return outcome.error_message


def _attempt(outcome: SendOutcome) -> AttemptRow:
    label = outcome.verdict.value
    if outcome.verdict is Verdict.SENT and outcome.operation is Operation.EDIT:
        label = "edited"
    return AttemptRow(
        delivery_id=outcome.delivery.id,
        number=outcome.delivery.attempts,
        operation=outcome.operation.value,
        outcome=label,
        started_at=outcome.started_at,
        latency_ms=outcome.latency_ms,
        vendor_status=outcome.vendor_status,
        error_class=outcome.error_class,
        error_reason=outcome.error_reason,
        error_message=outcome.error_message,
        retry_after=outcome.retry_after,
        rendered_revision=outcome.rendered_revision,
    )


def _learn(settlement: Settlement, outcome: SendOutcome) -> None:
    key = outcome.delivery.destination_key
    if outcome.verdict is Verdict.SENT:
        settlement.reset_keys.add(key)
        settlement.failure_counts.pop(key, None)
        settlement.first_failure.pop(key, None)
    elif outcome.verdict is Verdict.PERMANENT and outcome.counts_against_destination:
        settlement.failure_counts[key] = settlement.failure_counts.get(key, 0) + 1
        settlement.failure_reasons[key] = outcome.error_reason or "permanent"
        settlement.first_failure.setdefault(key, outcome)
    if outcome.retry_after is not None and outcome.retry_after > 0:
        previous = settlement.retry_hints.get(key, 0.0)
        settlement.retry_hints[key] = max(previous, outcome.retry_after)
