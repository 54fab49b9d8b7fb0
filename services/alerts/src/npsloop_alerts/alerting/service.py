"""Consume and decide: one response revision in, one alert and its deliveries out.

One read of the directory, routing (pure), then one atomic write
(`AlertRepository.decide_many`); the Kafka handler returns after that write committed, and only
then does the consumer commit the offset:

* dedupe on the CloudEvents id (`alert_processed_events`, insert-or-nothing);
* one alert per `(source, response_id)` — a newer revision updates score and comment, an older
  or equal one changes nothing;
* a new alert gets its deliveries (unique per alert, recipient, channel: a redelivered record
  cannot add a second) and a `created` event in the outbox;
* a newer revision adds no deliveries: it re-points the existing ones (chat messages already
  sent are queued for an edit in place; held emails are released once the comment is there).

Email waits for the comment of an incomplete response (no comment yet) until `received_at` plus
the hold. Slack incoming webhooks cannot edit, so they wait the same hold and post once; a
comment arriving after the hold updates Slack bot messages and Telegram but not posts already made
through a webhook or by email.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from npsloop_alerts.alerting.directory_view import DirectorySnapshot, DirectoryView
from npsloop_alerts.alerting.events import OutboxRecord, lifecycle_record
from npsloop_alerts.alerting.repository import AlertRepository, Decision, NewDelivery, Written
from npsloop_alerts.alerting.sla import SlaDeadlines, SlaPolicy
from npsloop_alerts.delivery.pacing import destination_key
from npsloop_alerts.routing.engine import ResponseFacts, RoutingDecision, Target, route
from npsloop_alerts.routing.rules import Channel
from npsloop_shared.contracts import (
    AlertEventKind,
    AlertLifecycleEvent,
    AlertStatus,
    ResponseReceived,
)

ALERT_ID_NAMESPACE: Final = uuid.UUID("5e0c2f61-8a4d-4f7b-b1c3-2d9e7f4a6c08")
DELIVERY_ID_NAMESPACE: Final = uuid.UUID("9c7d3e12-4b5a-4e8f-a6d1-0f2b3c4d5e6f")


class DecideOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    STALE = "stale"  # a revision not newer than the alert's
    DUPLICATE = "duplicate"  # this ce_id was processed before


@dataclass(frozen=True, slots=True)
class DecideResult:
    outcome: DecideOutcome
    alert_id: uuid.UUID
    deliveries_created: int = 0
    account_known: bool = True
    unresolved_recipients: int = 0


def alert_id_for(source: str, response_id: str) -> uuid.UUID:
    """Deterministic: the same response always names the same alert."""
    return uuid.uuid5(ALERT_ID_NAMESPACE, f"{source}\x1f{response_id}")


def delivery_id_for(
    alert_id: uuid.UUID, recipient_id: str, channel: str, purpose: str
) -> uuid.UUID:
    return uuid.uuid5(
        DELIVERY_ID_NAMESPACE, f"{alert_id}\x1f{recipient_id}\x1f{channel}\x1f{purpose}"
    )


def is_complete(event: ResponseReceived) -> bool:
    """A response is complete when it carries its comment (the score alone may be followed by
    a comment revision, as Delighted and Formbricks send them)."""
    return bool(event.comment and event.comment.strip())


def waits_for_comment(target: Target) -> bool:
    """Media that cannot be edited after sending: email and Slack incoming webhooks."""
    if target.channel is Channel.EMAIL:
        return True
    return target.channel is Channel.SLACK and target.address.startswith(("https://", "http://"))


@dataclass(frozen=True, slots=True)
class DeciderConfig:
    email_hold: timedelta
    sla_policy: SlaPolicy
    events_topic: str


class AlertDecider:
    def __init__(
        self,
        directory: DirectoryView,
        config: DeciderConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._directory = directory
        self._config = config
        self._clock = clock

    async def decide(
        self, repository: AlertRepository, event_id: uuid.UUID, event: ResponseReceived
    ) -> DecideResult:
        return (await self.decide_many(repository, [(event_id, event)]))[0]

    async def decide_many(
        self,
        repository: AlertRepository,
        events: Sequence[tuple[uuid.UUID, ResponseReceived]],
    ) -> list[DecideResult]:
        """Decide each event in order (a later revision sees what an earlier one wrote), with
        one directory read and as few statements as the order allows; the writes are atomic
        (see the repository)."""
        now = self._clock()
        snapshots = await self._directory.snapshots(
            repository.connection, {event.account_id for _, event in events}
        )
        planned = [
            self._plan(event_id, event, snapshots[event.account_id], now)
            for event_id, event in events
        ]
        written = await repository.decide_many([decision for decision, _ in planned])
        return [
            _result(decision, routing, outcome)
            for (decision, routing), outcome in zip(planned, written, strict=True)
        ]

    def _plan(
        self,
        event_id: uuid.UUID,
        event: ResponseReceived,
        snapshot: DirectorySnapshot,
        now: datetime,
    ) -> tuple[Decision, RoutingDecision]:
        """Everything to write for `event`, from the directory alone (no database access)."""
        routing = route(ResponseFacts.from_event(event), snapshot.inputs, now=now)
        segment = _segment(snapshot, event)
        deadlines = self._config.sla_policy.deadlines(event.bucket, segment, event.received_at)
        alert_id = alert_id_for(event.source, event.response_id)
        values = _alert_values(
            alert_id,
            event,
            snapshot=snapshot,
            decision=routing,
            segment=segment,
            deadlines=deadlines,
        )
        decision = Decision(
            event_id=event_id,
            alert=values,
            deliveries=[self._delivery(alert_id, t, snapshot, event) for t in routing.targets],
            created_event=self._created_event(alert_id, event, values, now),
            complete=is_complete(event),
        )
        return decision, routing

    def _delivery(
        self,
        alert_id: uuid.UUID,
        target: Target,
        snapshot: DirectorySnapshot,
        event: ResponseReceived,
    ) -> NewDelivery:
        person = snapshot.inputs.people[target.person_id]
        awaiting = waits_for_comment(target) and not is_complete(event)
        due = target.send_at
        if awaiting:
            due = max(due, event.received_at + self._config.email_hold)
        return NewDelivery(
            id=delivery_id_for(alert_id, target.person_id, target.channel.value, "alert"),
            recipient_id=target.person_id,
            recipient_role=target.role.value,
            recipient_name=person.name,
            locale=person.locale,
            timezone=person.timezone,
            channel=target.channel.value,
            destination=target.address,
            destination_key=destination_key(target.channel, target.address),
            not_before=target.send_at,
            next_attempt_at=due,
            awaiting_comment=awaiting,
        )

    def _created_event(
        self, alert_id: uuid.UUID, event: ResponseReceived, values: dict[str, Any], now: datetime
    ) -> OutboxRecord:
        lifecycle = AlertLifecycleEvent(
            event=AlertEventKind.CREATED,
            alert_id=alert_id,
            account_id=event.account_id,
            source=event.source,
            response_id=event.response_id,
            revision=event.revision,
            bucket=event.bucket,
            score=event.score,
            kind=event.kind,
            touchpoint=event.touchpoint,
            segment=values["segment"],
            owner_id=values["owner_id"],
            status=AlertStatus.OPEN,
            account_known=values["account_known"],
            submitted_at=event.submitted_at,
            received_at=event.received_at,
            acknowledge_due_at=values["acknowledge_due_at"],
            resolve_due_at=values["resolve_due_at"],
            occurred_at=now,
        )
        return lifecycle_record(lifecycle, topic=self._config.events_topic, now=now)


def _result(decision: Decision, routing: RoutingDecision, written: Written) -> DecideResult:
    alert_id = decision.alert["id"]
    if not written.fresh_event:
        return DecideResult(DecideOutcome.DUPLICATE, alert_id)
    if written.created is None:
        return DecideResult(DecideOutcome.STALE, alert_id)
    if not written.created:
        return DecideResult(DecideOutcome.UPDATED, alert_id)
    return DecideResult(
        DecideOutcome.CREATED,
        alert_id,
        deliveries_created=written.deliveries_created,
        account_known=routing.account_known,
        unresolved_recipients=len(routing.unresolved),
    )


def _segment(snapshot: DirectorySnapshot, event: ResponseReceived) -> str | None:
    if snapshot.account is not None and snapshot.account.segment:
        return snapshot.account.segment
    return event.attributes.get("segment")


def _alert_values(
    alert_id: uuid.UUID,
    event: ResponseReceived,
    *,
    snapshot: DirectorySnapshot,
    decision: RoutingDecision,
    segment: str | None,
    deadlines: SlaDeadlines,
) -> dict[str, Any]:
    account = snapshot.account
    return {
        "id": alert_id,
        "source": event.source,
        "response_id": event.response_id,
        "revision": event.revision,
        "account_id": event.account_id,
        "account_known": account is not None,
        # An unknown account still gets a readable name in every message: its id.
        "account_name": account.name if account else event.account_id,
        "segment": segment,
        "bucket": event.bucket.value,
        "score": event.score,
        "comment": event.comment,
        "kind": event.kind.value,
        "touchpoint": event.touchpoint,
        "respondent": event.respondent.model_dump(mode="json") if event.respondent else None,
        "response_locale": event.locale,
        "attributes": event.attributes,
        "submitted_at": event.submitted_at,
        "received_at": event.received_at,
        "owner_id": snapshot.responsible_person_id(),
        "acknowledge_due_at": deadlines.acknowledge_by,
        "resolve_due_at": deadlines.resolve_by,
        "matched_rule_ids": list(decision.matched_rule_ids),
    }
