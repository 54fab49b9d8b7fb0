"""Retry schedule, pacing arithmetic and settling outcomes: the policies as data."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from npsloop_alerts.channels import Channel as SentChannel
from npsloop_alerts.channels import SendReceipt, TelegramRef
from npsloop_alerts.delivery.backoff import RetryPolicy
from npsloop_alerts.delivery.channels import ChannelProviders
from npsloop_alerts.delivery.dispatch import Dispatcher
from npsloop_alerts.delivery.pacing import (
    TELEGRAM_BOT_KEY,
    Pace,
    PacedItem,
    PacingPolicy,
    destination_key,
    plan_slots,
)
from npsloop_alerts.delivery.settings import DeliverySettings
from npsloop_alerts.delivery.settle import settle
from npsloop_alerts.delivery.work import (
    AlertContent,
    ClaimedDelivery,
    Operation,
    SendOutcome,
    Verdict,
)
from npsloop_alerts.routing.rules import Channel

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(
    max_attempts=4,
    base_seconds=2,
    factor=3,
    max_seconds=30,
    jitter=0.2,
    max_retry_after_seconds=600,
)


def test_backoff_grows_exponentially_within_its_jitter_and_stops_at_the_cap() -> None:
    rng = random.Random(7)
    for attempt, expected in [(1, 2), (2, 6), (3, 18), (4, 30), (9, 30)]:
        delays = [POLICY.delay_seconds(attempt, rng=rng) for _ in range(200)]
        assert min(delays) >= expected * 0.8
        assert max(delays) <= expected * 1.2
        assert max(delays) - min(delays) > 0  # jittered, not a wave


def test_a_vendor_retry_hint_wins_over_the_backoff_but_is_capped() -> None:
    assert POLICY.delay_seconds(1, retry_after=17) == 17
    assert POLICY.delay_seconds(3, retry_after=0.5) == 0.5
    assert POLICY.delay_seconds(1, retry_after=86_400) == 600


def test_attempts_run_out_at_the_configured_limit() -> None:
    assert not POLICY.exhausted(3)
    assert POLICY.exhausted(4)


def test_secret_urls_never_appear_in_destination_keys() -> None:
    hook = "https://hooks.slack.com/services/T1/B2/SECRETsecret"
    key = destination_key(Channel.SLACK, hook)
    assert "SECRET" not in key
    assert key.startswith("slack:webhook:")
    assert key == destination_key(Channel.SLACK, hook)
    assert destination_key(Channel.WEBHOOK, "https://crm.example/hook?token=abc").startswith(
        "webhook:"
    )
    assert destination_key(Channel.EMAIL, "Olivia@Acme.Example") == "email:olivia@acme.example"
    assert destination_key(Channel.TELEGRAM, "1001") == "telegram:1001"


def test_vendor_limits_are_the_defaults_and_zero_lifts_them() -> None:
    defaults = PacingPolicy.from_settings(DeliverySettings())
    assert defaults.paces(Channel.SLACK, "slack:C1") == [Pace("slack:C1", 1.0)]
    assert defaults.paces(Channel.TELEGRAM, "telegram:1") == [
        Pace("telegram:1", 1.0),
        Pace(TELEGRAM_BOT_KEY, 1 / 30),
    ]
    assert defaults.paces(Channel.EMAIL, "email:a@b.c") == []
    lifted = PacingPolicy.from_settings(
        DeliverySettings(
            delivery_slack_interval_seconds=0,
            delivery_telegram_chat_interval_seconds=0,
            delivery_telegram_bot_interval_seconds=0,
        )
    )
    assert lifted.paces(Channel.SLACK, "slack:C1") == []
    assert lifted.paces(Channel.TELEGRAM, "telegram:1") == []


def _ids(count: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(count)]


def test_messages_to_one_destination_are_spaced_by_its_interval() -> None:
    ids = _ids(3)
    items = [PacedItem(i, [Pace("slack:C1", 1.0)]) for i in ids]

    plan = plan_slots(items, {}, NOW, timedelta(seconds=5))

    assert [plan.send_at[i] for i in ids] == [NOW + timedelta(seconds=s) for s in (0, 1, 2)]
    assert plan.next_allowed_at == {"slack:C1": NOW + timedelta(seconds=3)}
    assert not plan.deferred_until


def test_slots_beyond_the_window_go_back_to_the_queue_without_taking_a_slot() -> None:
    ids = _ids(4)
    items = [PacedItem(i, [Pace("slack:C1", 1.0)]) for i in ids]

    plan = plan_slots(items, {"slack:C1": NOW + timedelta(seconds=1)}, NOW, timedelta(seconds=2))

    assert set(plan.send_at) == set(ids[:2])
    assert plan.deferred_until == {
        ids[2]: NOW + timedelta(seconds=3),
        ids[3]: NOW + timedelta(seconds=4),
    }
    assert plan.next_allowed_at == {"slack:C1": NOW + timedelta(seconds=3)}


def test_a_telegram_message_waits_for_both_its_chat_and_the_bot() -> None:
    first, second = _ids(2)
    chat = Pace("telegram:1", 1.0)
    bot = Pace(TELEGRAM_BOT_KEY, 0.5)
    items = [PacedItem(first, [chat, bot]), PacedItem(second, [Pace("telegram:2", 1.0), bot])]

    plan = plan_slots(
        items, {TELEGRAM_BOT_KEY: NOW + timedelta(seconds=0.25)}, NOW, timedelta(seconds=5)
    )

    assert plan.send_at[first] == NOW + timedelta(seconds=0.25)
    assert plan.send_at[second] == NOW + timedelta(seconds=0.75)


def _claimed(attempts: int = 1, key: str = "telegram:1") -> ClaimedDelivery:
    return ClaimedDelivery(
        id=uuid.uuid4(),
        claim_token=uuid.uuid4(),
        alert_id=uuid.uuid4(),
        purpose="alert",
        recipient_id="olivia",
        recipient_name="Olivia",
        locale="en",
        timezone="UTC",
        channel="telegram",
        destination=key.split(":", 1)[1],
        destination_key=key,
        attempts=attempts,
        external_ref=None,
        editable=False,
        details=None,
        destination_disabled=False,
        alert=AlertContent(
            revision=0,
            bucket="detractor",
            score=3,
            comment=None,
            account_id="acc-1",
            account_name="Acme",
            segment=None,
            touchpoint=None,
            kind="relational",
            respondent=None,
            submitted_at=NOW,
            acknowledge_due_at=None,
        ),
    )


def _outcome(verdict: Verdict, delivery: ClaimedDelivery, **fields: object) -> SendOutcome:
    return SendOutcome(
        delivery=delivery,
        operation=Operation.SEND,
        verdict=verdict,
        started_at=NOW,
        **fields,  # type: ignore[arg-type]
    )


def test_settling_maps_each_verdict_to_the_next_status() -> None:
    receipt = SendReceipt(
        channel=SentChannel.TELEGRAM,
        ref=TelegramRef(chat_id="1", message_id=5),
        latency_ms=3.0,
    )
    outcomes = [
        _outcome(Verdict.SENT, _claimed(), receipt=receipt, editable=True, rendered_revision=0),
        _outcome(Verdict.TRANSIENT, _claimed(attempts=1), retry_after=7.0),
        _outcome(Verdict.TRANSIENT, _claimed(attempts=4)),
        _outcome(Verdict.PERMANENT, _claimed(), error_message="chat not found"),
        _outcome(Verdict.DESTINATION_DISABLED, _claimed()),
    ]

    settlement = settle(outcomes, POLICY)

    assert [(r.status, r.delay) for r in settlement.results] == [
        ("sent", None),
        ("pending", 7.0),
        ("dead", None),
        ("dead", None),
        ("dead", None),
    ]
    assert settlement.results[0].external_ref == {
        "kind": "telegram",
        "chat_id": "1",
        "message_id": 5,
    }
    assert [a.outcome for a in settlement.attempts] == [
        "sent",
        "transient",
        "transient",
        "permanent",
        "destination_disabled",
    ]
    assert settlement.retry_hints == {"telegram:1": 7.0}


def test_a_success_restarts_the_failure_run_and_config_errors_do_not_count() -> None:
    counted = _claimed(key="telegram:9")
    outcomes = [
        _outcome(Verdict.PERMANENT, counted, counts_against_destination=True, error_reason="x"),
        _outcome(Verdict.SENT, _claimed(key="telegram:9"), rendered_revision=0),
        _outcome(Verdict.PERMANENT, counted, counts_against_destination=True, error_reason="y"),
        _outcome(Verdict.PERMANENT, counted, counts_against_destination=True, error_reason="z"),
        _outcome(Verdict.PERMANENT, _claimed(key="telegram:8"), counts_against_destination=False),
    ]

    settlement = settle(outcomes, POLICY)

    assert settlement.reset_keys == {"telegram:9"}
    assert settlement.failure_counts == {"telegram:9": 2}
    assert settlement.failure_reasons == {"telegram:9": "z"}


@pytest.mark.parametrize("lease", [1.0, 17.0])
def test_a_lease_shorter_than_a_paced_send_is_refused(lease: float) -> None:
    from npsloop_alerts.delivery.loop import LoopConfig

    with pytest.raises(ValueError, match="LEASE"):
        LoopConfig.from_settings(
            DeliverySettings(
                delivery_lease_seconds=lease,
                delivery_send_timeout_seconds=15,
                delivery_rate_window_seconds=2,
            )
        )


async def test_deliveries_of_one_alert_share_its_message_view_until_the_alert_changes() -> None:
    providers = ChannelProviders.from_settings(DeliverySettings())
    try:
        dispatcher = Dispatcher(providers, links=None, send_timeout=1)
        telegram = _claimed()
        email = replace(telegram, id=uuid.uuid4(), channel="email", destination="o@acme.test")
        renamed = replace(email, alert=replace(email.alert, account_name="Acme Renamed"))
        elsewhere = replace(email, timezone="Asia/Tokyo")

        first = dispatcher.message_for(telegram)
        assert dispatcher.message_for(email) is first
        assert dispatcher.message_for(renamed).account_name == "Acme Renamed"
        assert dispatcher.message_for(elsewhere).timezone == "Asia/Tokyo"
        assert dispatcher.message_for(telegram).account_name == "Acme"
    finally:
        await providers.aclose()
