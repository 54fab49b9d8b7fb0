"""The routing engine as a pure function: no database, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time
from typing import Any

import pytest

from npsloop_alerts.routing.engine import (
    AccountRouting,
    ChannelConfig,
    PersonContact,
    ResponseFacts,
    RoutingDecision,
    RoutingInputs,
    Rule,
    Target,
    TeamRouting,
    quiet_hours_release,
    route,
)
from npsloop_alerts.routing.rules import Channel, RecipientRole, RuleDefinition
from npsloop_shared.contracts import Bucket, ResponseKind, ResponseReceived

NOW = datetime(2026, 5, 12, 15, 0, tzinfo=UTC)
CHANNELS = ChannelConfig(
    enabled=frozenset({Channel.EMAIL, Channel.SLACK, Channel.TELEGRAM, Channel.WEBHOOK})
)

OWNER = PersonContact(
    id="ana",
    name="Ana",
    email="ana@example.com",
    slack_webhook_url="https://hooks.slack.example/ana",
    telegram_chat_id="1001",
)
BACKUP = PersonContact(id="bruno", name="Bruno", email="bruno@example.com")
MANAGER = PersonContact(
    id="mei", name="Mei", email="mei@example.com", slack_webhook_url="https://hooks/mei"
)
TEAM = PersonContact(id="team", name="CS team", email="cs@example.com")
WINS = PersonContact(id="wins", name="#wins", slack_webhook_url="https://hooks.slack.example/wins")


def rule(rule_id: str, **definition: Any) -> Rule:
    definition.setdefault("name", rule_id)
    return Rule(id=rule_id, definition=RuleDefinition.model_validate(definition))


DEFAULT_RULES = (
    rule(
        "cancel",
        priority=10,
        match={"keywords": ["cancel", "cancelar", "取消"]},
        actions=[{"recipients": ["manager"], "channels": ["all_available"]}],
    ),
    rule(
        "detractor",
        priority=100,
        match={"buckets": ["detractor"]},
        actions=[{"recipients": ["owner"], "channels": ["all_available"]}],
    ),
    rule(
        "passive",
        priority=110,
        match={"buckets": ["passive"]},
        actions=[{"recipients": ["owner"], "channels": ["email"]}],
    ),
    rule(
        "promoter",
        priority=120,
        match={"buckets": ["promoter"]},
        actions=[
            {"recipients": ["owner"], "channels": ["slack", "email"], "mode": "first_available"},
            {"recipients": ["team_wins"], "channels": ["all_available"]},
        ],
    ),
)


def account(**overrides: Any) -> AccountRouting:
    values: dict[str, Any] = {
        "id": "acme",
        "segment": "retail",
        "owner_id": "ana",
        "backup_owner_id": "bruno",
        "manager_id": "mei",
    }
    return AccountRouting(**{**values, **overrides})


def inputs(
    *,
    account_routing: AccountRouting | None = None,
    people: tuple[PersonContact, ...] = (OWNER, BACKUP, MANAGER, TEAM, WINS),
    rules: tuple[Rule, ...] = DEFAULT_RULES,
    team: TeamRouting | None = None,
    channels: ChannelConfig = CHANNELS,
) -> RoutingInputs:
    return RoutingInputs(
        account=account_routing,
        people={person.id: person for person in people},
        rules=rules,
        team=team or TeamRouting(fallback_person_id="team"),
        channels=channels,
    )


def facts(
    bucket: Bucket = Bucket.DETRACTOR, comment: str | None = None, **overrides: Any
) -> ResponseFacts:
    values: dict[str, Any] = {
        "account_id": "acme",
        "bucket": bucket,
        "kind": ResponseKind.TRANSACTIONAL,
        "touchpoint": "checkout",
        "comment": comment,
    }
    return ResponseFacts(**{**values, **overrides})


def pairs(decision: RoutingDecision) -> set[tuple[str, Channel]]:
    return {(target.person_id, target.channel) for target in decision.targets}


def only(decision: RoutingDecision, person_id: str, channel: Channel) -> Target:
    [found] = [t for t in decision.targets if (t.person_id, t.channel) == (person_id, channel)]
    return found


# --- default behaviour per bucket ------------------------------------------------------------


def test_detractor_reaches_the_owner_on_every_channel_they_have_immediately() -> None:
    decision = route(facts(Bucket.DETRACTOR), inputs(account_routing=account()), now=NOW)

    assert pairs(decision) == {
        ("ana", Channel.EMAIL),
        ("ana", Channel.SLACK),
        ("ana", Channel.TELEGRAM),
    }
    assert all(target.send_at == NOW for target in decision.targets)
    assert all(target.role is RecipientRole.OWNER for target in decision.targets)
    assert not decision.used_fallback
    assert decision.account_known
    assert decision.matched_rule_ids == ("detractor",)
    assert only(decision, "ana", Channel.SLACK).address == "https://hooks.slack.example/ana"
    assert only(decision, "ana", Channel.TELEGRAM).address == "1001"
    assert only(decision, "ana", Channel.EMAIL).address == "ana@example.com"


def test_passive_reaches_the_owner_by_email_only() -> None:
    decision = route(facts(Bucket.PASSIVE), inputs(account_routing=account()), now=NOW)

    assert pairs(decision) == {("ana", Channel.EMAIL)}


def test_promoter_reaches_the_owner_on_slack_and_the_team_wins_channel() -> None:
    team = TeamRouting(fallback_person_id="team", wins_person_id="wins")
    decision = route(facts(Bucket.PROMOTER), inputs(account_routing=account(), team=team), now=NOW)

    assert pairs(decision) == {("ana", Channel.SLACK), ("wins", Channel.SLACK)}
    assert only(decision, "wins", Channel.SLACK).role is RecipientRole.TEAM_WINS


def test_promoter_owner_without_slack_gets_email_and_no_wins_channel_when_unset() -> None:
    owner = replace(OWNER, slack_webhook_url=None)
    decision = route(
        facts(Bucket.PROMOTER),
        inputs(account_routing=account(), people=(owner, BACKUP, TEAM)),
        now=NOW,
    )

    assert pairs(decision) == {("ana", Channel.EMAIL)}
    assert decision.unresolved == ()  # an unset wins channel is not a routing failure


# --- fallback chain --------------------------------------------------------------------------


def test_owner_missing_falls_back_to_the_backup_owner() -> None:
    decision = route(facts(), inputs(account_routing=account(owner_id=None)), now=NOW)

    assert pairs(decision) == {("bruno", Channel.EMAIL)}
    target = decision.targets[0]
    assert target.role is RecipientRole.BACKUP_OWNER
    assert target.via_fallback


def test_inactive_owner_falls_back_to_the_backup_owner() -> None:
    people = (replace(OWNER, active=False), BACKUP, TEAM)
    decision = route(facts(), inputs(account_routing=account(), people=people), now=NOW)

    assert pairs(decision) == {("bruno", Channel.EMAIL)}


def test_owner_unreachable_on_the_requested_channel_falls_back() -> None:
    people = (replace(OWNER, email=None), BACKUP, TEAM)
    decision = route(
        facts(Bucket.PASSIVE), inputs(account_routing=account(), people=people), now=NOW
    )

    assert pairs(decision) == {("bruno", Channel.EMAIL)}


def test_owner_and_backup_missing_falls_back_to_the_team() -> None:
    decision = route(
        facts(), inputs(account_routing=account(owner_id=None, backup_owner_id=None)), now=NOW
    )

    assert pairs(decision) == {("team", Channel.EMAIL)}
    assert decision.targets[0].role is RecipientRole.TEAM
    assert decision.used_fallback


def test_unknown_account_routes_to_the_team_fallback_and_says_so() -> None:
    decision = route(facts(account_id="nobody-knows"), inputs(account_routing=None), now=NOW)

    assert pairs(decision) == {("team", Channel.EMAIL)}
    assert not decision.account_known
    assert decision.targets[0].via_fallback


def test_with_nobody_reachable_the_decision_lists_what_was_unresolved() -> None:
    decision = route(
        facts(account_id="nobody-knows"),
        inputs(account_routing=None, team=TeamRouting()),
        now=NOW,
    )

    assert decision.targets == ()
    assert [(u.rule_id, u.recipient) for u in decision.unresolved] == [("detractor", "owner")]


@pytest.mark.parametrize("bucket", list(Bucket))
@pytest.mark.parametrize(
    "account_routing",
    [
        None,
        account(),
        account(owner_id=None),
        account(owner_id=None, backup_owner_id=None),
        account(owner_id="ghost", backup_owner_id="ghost-2", manager_id=None),
    ],
    ids=["unknown", "complete", "no-owner", "no-owner-no-backup", "dangling-ids"],
)
def test_every_response_reaches_someone_when_the_team_fallback_is_reachable(
    bucket: Bucket, account_routing: AccountRouting | None
) -> None:
    decision = route(facts(bucket), inputs(account_routing=account_routing), now=NOW)

    assert decision.targets, f"{bucket} for {account_routing} was dropped"


# --- keywords and matching -------------------------------------------------------------------


@pytest.mark.parametrize(
    "comment",
    [
        "I want to cancel my plan",
        "CANCEL NOW",
        "ＣＡＮＣＥＬ",  # full-width letters normalise (NFKC) to ASCII
        "Quero cancelar a assinatura",
        "我想取消订阅",  # no word boundaries in Chinese: substring match
        "Cancel\u00a0everything",
    ],
)
def test_cancellation_words_also_alert_the_manager(comment: str) -> None:
    decision = route(facts(Bucket.PASSIVE, comment), inputs(account_routing=account()), now=NOW)

    assert ("mei", Channel.EMAIL) in pairs(decision)
    assert ("mei", Channel.SLACK) in pairs(decision)
    assert only(decision, "mei", Channel.EMAIL).role is RecipientRole.MANAGER
    assert decision.matched_rule_ids == ("cancel", "passive")


@pytest.mark.parametrize("comment", [None, "", "great service", "取得", "can cel"])
def test_comments_without_the_words_do_not_alert_the_manager(comment: str | None) -> None:
    decision = route(facts(Bucket.PASSIVE, comment), inputs(account_routing=account()), now=NOW)

    assert {person for person, _ in pairs(decision)} == {"ana"}


def test_manager_missing_falls_back_to_the_team_for_keyword_alerts() -> None:
    decision = route(
        facts(Bucket.PROMOTER, "please cancel"),
        inputs(account_routing=account(manager_id=None)),
        now=NOW,
    )

    assert ("team", Channel.EMAIL) in pairs(decision)


def test_overlapping_rules_give_one_target_per_person_and_channel() -> None:
    decision = route(
        facts(Bucket.DETRACTOR, "cancel"),
        inputs(account_routing=account(manager_id="ana")),
        now=NOW,
    )

    assert len(decision.targets) == len(pairs(decision)) == 3
    assert only(decision, "ana", Channel.EMAIL).rule_ids == ("cancel", "detractor")


def test_segment_touchpoint_and_kind_criteria_are_case_insensitive() -> None:
    wholesale = rule(
        "wholesale-checkout",
        priority=1,
        match={
            "segments": ["Wholesale"],
            "touchpoints": ["CHECKOUT"],
            "kinds": ["transactional"],
        },
        actions=[{"recipients": ["manager"], "channels": ["email"]}],
    )
    rules = (wholesale, *DEFAULT_RULES)
    matching = inputs(account_routing=account(segment="wholesale"), rules=rules)
    other_segment = inputs(account_routing=account(segment="retail"), rules=rules)

    assert "wholesale-checkout" in route(facts(), matching, now=NOW).matched_rule_ids
    assert "wholesale-checkout" not in route(facts(), other_segment, now=NOW).matched_rule_ids
    relational = facts(kind=ResponseKind.RELATIONAL, touchpoint="checkout")
    assert "wholesale-checkout" not in route(relational, matching, now=NOW).matched_rule_ids


def test_unknown_account_matches_segment_rules_on_the_response_attribute() -> None:
    wholesale = rule(
        "wholesale",
        match={"segments": ["wholesale"]},
        actions=[{"recipients": ["team"], "channels": ["email"]}],
    )
    decision = route(
        facts(account_id="new", segment_hint="Wholesale"),
        inputs(account_routing=None, rules=(wholesale,)),
        now=NOW,
    )

    assert decision.matched_rule_ids == ("wholesale",)


def test_priority_orders_rules_and_stop_processing_ends_evaluation() -> None:
    vip = rule(
        "vip-only-manager",
        priority=1,
        stop_processing=True,
        match={"segments": ["vip"]},
        actions=[{"recipients": ["manager"], "channels": ["email"]}],
    )
    decision = route(
        facts(Bucket.DETRACTOR, "cancel"),
        inputs(account_routing=account(segment="vip"), rules=(*DEFAULT_RULES, vip)),
        now=NOW,
    )

    assert decision.matched_rule_ids == ("vip-only-manager",)
    assert pairs(decision) == {("mei", Channel.EMAIL)}


def test_disabled_rules_are_ignored() -> None:
    rules = tuple(
        rule(r.id, **{**r.definition.model_dump(), "enabled": r.id != "detractor"})
        for r in DEFAULT_RULES
    )
    decision = route(facts(), inputs(account_routing=account(), rules=rules), now=NOW)

    assert decision.targets == ()
    assert decision.matched_rule_ids == ()


def test_a_specific_person_recipient_falls_back_to_the_team_when_gone() -> None:
    escalation = rule(
        "ceo",
        match={"buckets": ["detractor"]},
        actions=[{"recipients": ["person:ceo"], "channels": ["email"]}],
    )
    ceo = PersonContact(id="ceo", name="CEO", email="ceo@example.com")
    present = inputs(account_routing=account(), rules=(escalation,), people=(ceo, TEAM))
    gone = inputs(account_routing=account(), rules=(escalation,), people=(TEAM,))

    assert pairs(route(facts(), present, now=NOW)) == {("ceo", Channel.EMAIL)}
    assert pairs(route(facts(), gone, now=NOW)) == {("team", Channel.EMAIL)}


# --- channels --------------------------------------------------------------------------------


def test_disabled_channels_are_never_targeted() -> None:
    email_only = ChannelConfig(enabled=frozenset({Channel.EMAIL}))
    decision = route(facts(), inputs(account_routing=account(), channels=email_only), now=NOW)

    assert pairs(decision) == {("ana", Channel.EMAIL)}


def test_console_and_webhook_are_available_when_enabled() -> None:
    crm = PersonContact(id="crm", name="CRM", webhook_url="https://crm.example/hook")
    everything = ChannelConfig()
    decision = route(
        facts(),
        inputs(account_routing=account(owner_id="crm"), people=(crm,), channels=everything),
        now=NOW,
    )

    assert pairs(decision) == {("crm", Channel.WEBHOOK), ("crm", Channel.CONSOLE)}
    assert only(decision, "crm", Channel.CONSOLE).address == "crm"


@pytest.mark.parametrize(
    ("bot_mode", "slack_channel", "webhook", "expected"),
    [
        (True, "C0123", "https://hooks/x", "C0123"),
        (False, "C0123", "https://hooks/x", "https://hooks/x"),
        (True, None, "https://hooks/x", "https://hooks/x"),
        (False, "C0123", None, None),
    ],
)
def test_slack_address_depends_on_bot_mode(
    bot_mode: bool, slack_channel: str | None, webhook: str | None, expected: str | None
) -> None:
    person = PersonContact(id="p", name="P", slack_channel=slack_channel, slack_webhook_url=webhook)
    config = ChannelConfig(enabled=frozenset({Channel.SLACK}), slack_bot_mode=bot_mode)
    decision = route(
        facts(),
        inputs(account_routing=account(owner_id="p"), people=(person,), channels=config),
        now=NOW,
    )

    addresses = [t.address for t in decision.targets if t.person_id == "p"]
    assert addresses == ([expected] if expected else [])


def test_first_available_follows_the_order_the_rule_lists() -> None:
    email_first = rule(
        "email-first",
        actions=[
            {"recipients": ["owner"], "channels": ["email", "slack"], "mode": "first_available"}
        ],
    )
    decision = route(facts(), inputs(account_routing=account(), rules=(email_first,)), now=NOW)

    assert pairs(decision) == {("ana", Channel.EMAIL)}


# --- quiet hours -----------------------------------------------------------------------------

SAO_PAULO_NIGHT_OWL = replace(
    OWNER,
    timezone="America/Sao_Paulo",
    quiet_hours_start=time(22, 0),
    quiet_hours_end=time(7, 0),
    webhook_url="https://crm.example/hook",
)


def test_quiet_hours_delay_chat_and_email_but_not_machines_or_the_record() -> None:
    at_night = datetime(2026, 5, 13, 1, 30, tzinfo=UTC)  # 22:30 in São Paulo (UTC-3)
    decision = route(
        facts(),
        inputs(account_routing=account(), people=(SAO_PAULO_NIGHT_OWL, TEAM)),
        now=at_night,
    )

    morning = datetime(2026, 5, 13, 10, 0, tzinfo=UTC)  # 07:00 in São Paulo
    assert only(decision, "ana", Channel.EMAIL).send_at == morning
    assert only(decision, "ana", Channel.SLACK).send_at == morning
    assert only(decision, "ana", Channel.TELEGRAM).send_at == morning
    assert only(decision, "ana", Channel.WEBHOOK).send_at == at_night


def test_quiet_hours_after_midnight_release_the_same_morning() -> None:
    early = datetime(2026, 5, 13, 8, 0, tzinfo=UTC)  # 05:00 local
    assert quiet_hours_release(SAO_PAULO_NIGHT_OWL, early) == datetime(
        2026, 5, 13, 10, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 5, 13, 10, 0, tzinfo=UTC),  # 07:00 local: the window has just ended
        datetime(2026, 5, 13, 15, 0, tzinfo=UTC),  # noon
        datetime(2026, 5, 14, 0, 59, tzinfo=UTC),  # 21:59 local
    ],
)
def test_outside_quiet_hours_sends_now(moment: datetime) -> None:
    assert quiet_hours_release(SAO_PAULO_NIGHT_OWL, moment) == moment


def test_a_daytime_quiet_window_does_not_wrap() -> None:
    lunch = replace(
        OWNER, timezone="Asia/Shanghai", quiet_hours_start=time(12), quiet_hours_end=time(13)
    )
    during = datetime(2026, 5, 13, 4, 15, tzinfo=UTC)  # 12:15 in Shanghai
    assert quiet_hours_release(lunch, during) == datetime(2026, 5, 13, 5, 0, tzinfo=UTC)
    assert quiet_hours_release(lunch, datetime(2026, 5, 13, 3, 0, tzinfo=UTC)).hour == 3


def test_a_release_time_inside_a_dst_gap_is_not_earlier_than_now() -> None:
    # New York springs forward at 02:00 on 2026-03-08; 02:30 that night does not exist.
    person = replace(
        OWNER, timezone="America/New_York", quiet_hours_start=time(22), quiet_hours_end=time(2, 30)
    )
    now = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST
    release = quiet_hours_release(person, now)
    assert release == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT


def test_an_urgent_action_can_ignore_quiet_hours() -> None:
    urgent = rule(
        "urgent",
        actions=[{"recipients": ["owner"], "channels": ["telegram"], "respect_quiet_hours": False}],
    )
    at_night = datetime(2026, 5, 13, 1, 30, tzinfo=UTC)
    decision = route(
        facts(),
        inputs(account_routing=account(), people=(SAO_PAULO_NIGHT_OWL,), rules=(urgent,)),
        now=at_night,
    )

    assert only(decision, "ana", Channel.TELEGRAM).send_at == at_night


def test_merging_keeps_the_earliest_send_time() -> None:
    urgent = rule(
        "urgent",
        priority=1,
        actions=[{"recipients": ["owner"], "channels": ["email"], "respect_quiet_hours": False}],
    )
    at_night = datetime(2026, 5, 13, 1, 30, tzinfo=UTC)
    decision = route(
        facts(),
        inputs(
            account_routing=account(), people=(SAO_PAULO_NIGHT_OWL,), rules=(urgent, *DEFAULT_RULES)
        ),
        now=at_night,
    )

    assert only(decision, "ana", Channel.EMAIL).send_at == at_night
    assert only(decision, "ana", Channel.EMAIL).rule_ids == ("urgent", "detractor")


def test_facts_come_from_the_response_event() -> None:
    event = ResponseReceived(
        response_id="r1",
        revision=0,
        source="api",
        kind=ResponseKind.RELATIONAL,
        touchpoint=None,
        account_id="acme",
        score=3,
        bucket=Bucket.DETRACTOR,
        comment="vou cancelar",
        respondent=None,
        submitted_at=NOW,
        received_at=NOW,
        locale="pt-BR",
        attributes={"segment": "wholesale"},
    )

    assert ResponseFacts.from_event(event) == ResponseFacts(
        account_id="acme",
        bucket=Bucket.DETRACTOR,
        kind=ResponseKind.RELATIONAL,
        touchpoint=None,
        comment="vou cancelar",
        segment_hint="wholesale",
    )
