"""The routing engine: a pure function from (response, account, people, rules, team) to targets.

No I/O, no clock: `now` is an argument, so every decision can be replayed and unit-tested.

Guarantees:
* Every response reaches someone when anyone is reachable: a role nobody fills (no owner, owner
  inactive or without an address for the channels asked) walks the chain owner → backup owner →
  team fallback; manager and `person:<id>` fall back to the team. An unknown account routes every
  role to the team fallback (`RoutingDecision.account_known` is False so callers count it).
* One target per `(person, channel)`: overlapping rules merge, keeping every matching rule id.
* Quiet hours move `send_at` for email and chat to the end of the person's quiet window; the
  decision (and the alert record) is made now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from npsloop_alerts.routing.rules import (
    Channel,
    ChannelChoice,
    ChannelMode,
    RecipientRole,
    RuleAction,
    RuleDefinition,
    normalise_text,
    recipient_person_id,
    recipient_role,
)
from npsloop_shared.contracts import Bucket, ResponseKind, ResponseReceived

# Order in which `all_available` expands and `first_available` prefers.
CHANNEL_ORDER: Final = (
    Channel.SLACK,
    Channel.EMAIL,
    Channel.TELEGRAM,
    Channel.WEBHOOK,
    Channel.CONSOLE,
)
# Media a human reads on a phone; machines (webhook, console) are never held for quiet hours.
QUIET_HOURS_CHANNELS: Final = frozenset({Channel.EMAIL, Channel.SLACK, Channel.TELEGRAM})


@dataclass(frozen=True, slots=True)
class PersonContact:
    id: str
    name: str
    email: str | None = None
    slack_webhook_url: str | None = None
    slack_channel: str | None = None
    telegram_chat_id: str | None = None
    webhook_url: str | None = None
    locale: str = "en"
    timezone: str = "UTC"
    quiet_hours_start: time | None = None
    quiet_hours_end: time | None = None
    active: bool = True


@dataclass(frozen=True, slots=True)
class AccountRouting:
    id: str
    segment: str | None = None
    owner_id: str | None = None
    backup_owner_id: str | None = None
    manager_id: str | None = None


@dataclass(frozen=True, slots=True)
class TeamRouting:
    fallback_person_id: str | None = None
    wins_person_id: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    definition: RuleDefinition


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """What this deployment can send: enabled channels, and Slack bot mode vs webhooks."""

    enabled: frozenset[Channel] = frozenset(Channel)
    slack_bot_mode: bool = False


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    """What routing looks at in a response."""

    account_id: str
    bucket: Bucket
    kind: ResponseKind
    touchpoint: str | None = None
    comment: str | None = None
    segment_hint: str | None = None

    @classmethod
    def from_event(cls, event: ResponseReceived) -> ResponseFacts:
        return cls(
            account_id=event.account_id,
            bucket=event.bucket,
            kind=event.kind,
            touchpoint=event.touchpoint,
            comment=event.comment,
            segment_hint=event.attributes.get("segment"),
        )


@dataclass(frozen=True, slots=True)
class Target:
    """One delivery to make: who, on which channel, at which address, not before `send_at`."""

    person_id: str
    role: RecipientRole
    channel: Channel
    address: str
    send_at: datetime
    via_fallback: bool
    rule_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A recipient a matching rule asked for that nobody could fill (not even the team)."""

    rule_id: str
    recipient: str


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    targets: tuple[Target, ...]
    matched_rule_ids: tuple[str, ...]
    account_known: bool
    unresolved: tuple[Unresolved, ...] = ()

    @property
    def used_fallback(self) -> bool:
        return any(target.via_fallback for target in self.targets)


@dataclass(frozen=True, slots=True)
class RoutingInputs:
    account: AccountRouting | None
    people: Mapping[str, PersonContact]
    rules: Sequence[Rule]
    team: TeamRouting
    channels: ChannelConfig = field(default_factory=ChannelConfig)


def route(facts: ResponseFacts, inputs: RoutingInputs, *, now: datetime) -> RoutingDecision:
    """Decide who gets this response, on which channels, and when."""
    targets: dict[tuple[str, Channel], Target] = {}
    unresolved: list[Unresolved] = []
    matched = matching_rules(facts, inputs.account, inputs.rules)
    for rule in matched:
        for action in rule.definition.actions:
            for recipient in action.recipients:
                if _optional_and_unset(recipient, inputs.team):
                    continue
                found = _resolve(recipient, action, inputs, rule.id, now)
                if not found:
                    unresolved.append(Unresolved(rule_id=rule.id, recipient=recipient))
                for target in found:
                    _merge(targets, target)
    return RoutingDecision(
        targets=tuple(targets.values()),
        matched_rule_ids=tuple(rule.id for rule in matched),
        account_known=inputs.account is not None,
        unresolved=tuple(unresolved),
    )


def _optional_and_unset(recipient: str, team: TeamRouting) -> bool:
    """`team_wins` only applies "if configured": without a wins destination it is skipped."""
    return recipient_role(recipient) is RecipientRole.TEAM_WINS and team.wins_person_id is None


def matching_rules(
    facts: ResponseFacts, account: AccountRouting | None, rules: Iterable[Rule]
) -> list[Rule]:
    """Enabled rules that match, by (priority, id); a matching `stop_processing` rule ends it."""
    segment = account.segment if account and account.segment else facts.segment_hint
    comment = normalise_text(facts.comment) if facts.comment else ""
    matched = []
    ordered = sorted(rules, key=lambda rule: (rule.definition.priority, rule.id))
    for rule in ordered:
        if rule.definition.enabled and _matches(rule.definition, facts, segment, comment):
            matched.append(rule)
            if rule.definition.stop_processing:
                break
    return matched


def _matches(
    definition: RuleDefinition, facts: ResponseFacts, segment: str | None, comment: str
) -> bool:
    match = definition.match
    checks = (
        not match.buckets or facts.bucket in match.buckets,
        not match.kinds or facts.kind in match.kinds,
        not match.segments or (segment is not None and normalise_text(segment) in match.segments),
        not match.touchpoints
        or (facts.touchpoint is not None and normalise_text(facts.touchpoint) in match.touchpoints),
        not match.keywords or any(keyword in comment for keyword in match.keywords),
    )
    return all(checks)


def _candidate_chain(
    recipient: str, account: AccountRouting | None, team: TeamRouting
) -> list[tuple[str | None, RecipientRole]]:
    """Who may fill `recipient`, in order; index > 0 means a fallback was used."""
    role = recipient_role(recipient)
    team_fallback = (team.fallback_person_id, RecipientRole.TEAM)
    if role is RecipientRole.TEAM:
        return [team_fallback]
    if role is RecipientRole.TEAM_WINS:
        return [(team.wins_person_id, RecipientRole.TEAM_WINS)]  # optional: no fallback
    if role is RecipientRole.PERSON:
        return [(recipient_person_id(recipient), RecipientRole.PERSON), team_fallback]
    owner, backup, manager = (
        (account.owner_id, account.backup_owner_id, account.manager_id) if account else (None,) * 3
    )
    chains = {
        RecipientRole.OWNER: [
            (owner, RecipientRole.OWNER),
            (backup, RecipientRole.BACKUP_OWNER),
            team_fallback,
        ],
        RecipientRole.BACKUP_OWNER: [(backup, RecipientRole.BACKUP_OWNER), team_fallback],
        RecipientRole.MANAGER: [(manager, RecipientRole.MANAGER), team_fallback],
    }
    return chains[role]


def _resolve(
    recipient: str, action: RuleAction, inputs: RoutingInputs, rule_id: str, now: datetime
) -> list[Target]:
    chain = _candidate_chain(recipient, inputs.account, inputs.team)
    for position, (person_id, role) in enumerate(chain):
        person = inputs.people.get(person_id) if person_id else None
        if person is None or not person.active:
            continue
        targets = [
            Target(
                person_id=person.id,
                role=role,
                channel=channel,
                address=address,
                send_at=_send_at(person, channel, action, now),
                via_fallback=position > 0,
                rule_ids=(rule_id,),
            )
            for channel, address in _addresses(person, action, inputs.channels)
        ]
        if targets:
            return targets
    return []


def _addresses(
    person: PersonContact, action: RuleAction, config: ChannelConfig
) -> list[tuple[Channel, str]]:
    found = []
    for channel in _requested_channels(action):
        if channel not in config.enabled:
            continue
        address = address_for(person, channel, slack_bot_mode=config.slack_bot_mode)
        if address is not None:
            found.append((channel, address))
            if action.mode is ChannelMode.FIRST_AVAILABLE:
                break
    return found


def _requested_channels(action: RuleAction) -> list[Channel]:
    if ChannelChoice.ALL_AVAILABLE in action.channels:
        return list(CHANNEL_ORDER)
    return [Channel(choice.value) for choice in action.channels]


def address_for(person: PersonContact, channel: Channel, *, slack_bot_mode: bool) -> str | None:
    """The person's address on `channel`, or None when they cannot receive it there.

    Slack: in bot mode a `slack_channel` (channel or user id) is preferred and the incoming-webhook
    URL is the fallback; without a bot token only the webhook URL works. An address starting with
    `https://` is always a webhook URL. Console needs no address (the person id is used).
    """
    if channel is Channel.EMAIL:
        return person.email
    if channel is Channel.SLACK:
        if slack_bot_mode and person.slack_channel:
            return person.slack_channel
        return person.slack_webhook_url
    if channel is Channel.TELEGRAM:
        return person.telegram_chat_id
    if channel is Channel.WEBHOOK:
        return person.webhook_url
    return person.id


def _send_at(
    person: PersonContact, channel: Channel, action: RuleAction, now: datetime
) -> datetime:
    if not action.respect_quiet_hours or channel not in QUIET_HOURS_CHANNELS:
        return now
    return quiet_hours_release(person, now)


def quiet_hours_release(person: PersonContact, now: datetime) -> datetime:
    """`now` outside the person's quiet hours, else the moment (UTC) the quiet window ends.

    Windows may wrap midnight (22:00-07:00). Start == end means no quiet hours.
    """
    start, end = person.quiet_hours_start, person.quiet_hours_end
    if start is None or end is None or start == end:
        return now
    zone = ZoneInfo(person.timezone)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    release_day = _quiet_window_end_day(local.date(), clock, start, end)
    if release_day is None:
        return now
    release = datetime.combine(release_day, end, tzinfo=zone).astimezone(UTC)
    # A release time that falls into a DST gap can map before `now`; never send earlier than now.
    return max(release, now)


def _quiet_window_end_day(today: date, clock: time, start: time, end: time) -> date | None:
    if start < end:
        return today if start <= clock < end else None
    if clock >= start:
        return today + timedelta(days=1)
    if clock < end:
        return today
    return None


def _merge(targets: dict[tuple[str, Channel], Target], target: Target) -> None:
    key = (target.person_id, target.channel)
    existing = targets.get(key)
    if existing is None:
        targets[key] = target
        return
    rule_ids = existing.rule_ids + tuple(r for r in target.rule_ids if r not in existing.rule_ids)
    targets[key] = replace(
        existing,
        send_at=min(existing.send_at, target.send_at),
        via_fallback=existing.via_fallback and target.via_fallback,
        rule_ids=rule_ids,
    )
