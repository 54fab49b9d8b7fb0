"""Consume and decide on a real PostgreSQL: dedupe, one alert per response, revisions, holds."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.alerting.directory_view import DirectoryView
from npsloop_alerts.alerting.handler import decode_response
from npsloop_alerts.alerting.repository import AlertRepository
from npsloop_alerts.alerting.service import (
    AlertDecider,
    DecideOutcome,
    DeciderConfig,
    alert_id_for,
)
from npsloop_alerts.alerting.sla import SlaClock, SlaPolicy
from npsloop_alerts.routing.engine import ChannelConfig
from npsloop_alerts.routing.rules import Channel
from npsloop_shared.contracts import Bucket, ResponseReceived
from npsloop_shared.kafka.consumer import ConsumedRecord, PermanentMessageError
from tests.alerts.alerting_support import (
    add_account,
    add_person,
    driver_connection,
    response,
    set_team_fallback,
)

HOLD = timedelta(seconds=60)
CHANNELS = frozenset({Channel.EMAIL, Channel.SLACK, Channel.TELEGRAM, Channel.WEBHOOK})
POLICY = SlaPolicy(
    segments={"wholesale": {Bucket.DETRACTOR: SlaClock(acknowledge_hours=1, resolve_hours=8)}}
)


@pytest.fixture
def decider() -> AlertDecider:
    return AlertDecider(
        DirectoryView(ChannelConfig(enabled=CHANNELS, slack_bot_mode=True)),
        DeciderConfig(email_hold=HOLD, sla_policy=POLICY, events_topic="npsloop.alerts.v1"),
    )


@pytest.fixture
async def directory(session: AsyncSession) -> None:
    await add_person(
        session,
        "olivia",
        email_address="olivia@acme.example",
        slack_channel="C0OLIVIA",
        telegram_chat_id="1001",
        locale="pt-BR",
        timezone="America/Sao_Paulo",
    )
    await add_person(session, "team", email_address="team@npsloop.example")
    await add_account(session, "acc-1", owner_id="olivia")
    await set_team_fallback(session, "team")


async def decide(
    decider: AlertDecider, session: AsyncSession, event: ResponseReceived
) -> DecideOutcome:
    result = await decider.decide(
        AlertRepository(await driver_connection(session)), event.event_id, event
    )
    return result.outcome


async def rows(session: AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    result = await session.execute(text(sql), params)
    return [dict(row) for row in result.mappings()]


async def deliveries(session: AsyncSession, event: ResponseReceived) -> dict[str, dict[str, Any]]:
    found = await rows(
        session,
        "SELECT * FROM deliveries WHERE alert_id = :a ORDER BY channel",
        a=alert_id_for(event.source, event.response_id),
    )
    return {row["channel"]: row for row in found}


@pytest.mark.usefixtures("directory")
async def test_a_detractor_becomes_one_alert_with_a_delivery_per_channel_of_its_owner(
    decider: AlertDecider, session: AsyncSession
) -> None:
    event = response(comment="Checkout kept failing.")

    assert await decide(decider, session, event) is DecideOutcome.CREATED

    (alert,) = await rows(
        session, "SELECT * FROM alerts WHERE response_id = :r", r=event.response_id
    )
    assert alert["owner_id"] == "olivia"
    assert alert["account_name"] == "Acme Retail"
    assert alert["bucket"] == "detractor"
    assert alert["comment"] == "Checkout kept failing."
    assert alert["status"] == "open"
    assert alert["acknowledge_due_at"] == event.received_at + timedelta(hours=4)
    by_channel = await deliveries(session, event)
    assert set(by_channel) == {"email", "slack", "telegram"}
    assert by_channel["email"]["destination"] == "olivia@acme.example"
    assert by_channel["slack"]["destination"] == "C0OLIVIA"
    assert by_channel["telegram"]["destination"] == "1001"
    assert {row["locale"] for row in by_channel.values()} == {"pt-BR"}
    assert {row["status"] for row in by_channel.values()} == {"pending"}
    # Complete (has a comment): nothing waits for the hold.
    assert not any(row["awaiting_comment"] for row in by_channel.values())


@pytest.mark.usefixtures("directory")
async def test_the_created_event_is_in_the_outbox_keyed_by_account(
    decider: AlertDecider, session: AsyncSession
) -> None:
    event = response()
    await decide(decider, session, event)

    (outbox,) = await rows(session, "SELECT * FROM alert_outbox")
    assert outbox["topic"] == "npsloop.alerts.v1"
    assert outbox["key"] == "acc-1"
    headers = dict(outbox["headers"])
    assert headers["ce_type"] == "io.npsloop.alert.created.v1"
    assert headers["ce_subject"] == str(alert_id_for("api", event.response_id))


@pytest.mark.usefixtures("directory")
async def test_the_same_event_twice_is_one_alert_and_one_set_of_deliveries(
    decider: AlertDecider, session: AsyncSession
) -> None:
    event = response()

    assert await decide(decider, session, event) is DecideOutcome.CREATED
    assert await decide(decider, session, event) is DecideOutcome.DUPLICATE

    assert len(await rows(session, "SELECT id FROM alerts")) == 1
    assert len(await rows(session, "SELECT id FROM deliveries")) == 3
    assert len(await rows(session, "SELECT id FROM alert_outbox")) == 1


@pytest.mark.usefixtures("directory")
async def test_a_batch_is_decided_in_order_with_one_directory_read_for_all(
    decider: AlertDecider, session: AsyncSession
) -> None:
    await add_account(session, "acc-2", owner_id="olivia")
    score_only = response(comment=None)
    with_comment = response(
        response_id=score_only.response_id, revision=1, comment="Then it broke again."
    )
    other_account = response(account_id="acc-2")
    unknown_account = response(account_id="acc-unknown")
    batch = [score_only, with_comment, score_only, other_account, unknown_account]

    results = await decider.decide_many(
        AlertRepository(await driver_connection(session)),
        [(event.event_id, event) for event in batch],
    )

    # A later revision in the same batch sees what the earlier one wrote.
    assert [result.outcome for result in results] == [
        DecideOutcome.CREATED,
        DecideOutcome.UPDATED,
        DecideOutcome.DUPLICATE,
        DecideOutcome.CREATED,
        DecideOutcome.CREATED,
    ]
    assert [result.account_known for result in results[3:]] == [True, False]
    (alert,) = await rows(
        session, "SELECT revision, comment FROM alerts WHERE id = :a", a=results[0].alert_id
    )
    assert alert == {"revision": 1, "comment": "Then it broke again."}
    owners = await rows(session, "SELECT account_id, owner_id FROM alerts ORDER BY account_id")
    assert owners == [
        {"account_id": "acc-1", "owner_id": "olivia"},
        {"account_id": "acc-2", "owner_id": "olivia"},
        {"account_id": "acc-unknown", "owner_id": "team"},
    ]


@pytest.mark.usefixtures("directory")
async def test_score_first_holds_the_email_but_not_the_chat_messages(
    decider: AlertDecider, session: AsyncSession
) -> None:
    event = response(comment=None)
    await decide(decider, session, event)

    by_channel = await deliveries(session, event)
    assert by_channel["email"]["awaiting_comment"]
    assert by_channel["email"]["next_attempt_at"] == event.received_at + HOLD
    assert not by_channel["telegram"]["awaiting_comment"]
    assert by_channel["telegram"]["next_attempt_at"] <= event.received_at + timedelta(seconds=1)


@pytest.mark.usefixtures("directory")
async def test_the_comment_revision_updates_the_alert_and_releases_the_held_email(
    decider: AlertDecider, session: AsyncSession
) -> None:
    first = response(comment=None)
    await decide(decider, session, first)
    second = response(
        response_id=first.response_id, revision=1, comment="And nobody answered my call."
    )

    assert await decide(decider, session, second) is DecideOutcome.UPDATED

    (alert,) = await rows(session, "SELECT * FROM alerts")
    assert alert["revision"] == 1
    assert alert["comment"] == "And nobody answered my call."
    by_channel = await deliveries(session, first)
    assert len(by_channel) == 3  # a revision never adds deliveries
    assert not by_channel["email"]["awaiting_comment"]
    (now,) = await rows(session, "SELECT clock_timestamp() AS at")
    assert by_channel["email"]["next_attempt_at"] <= now["at"]
    assert {row["content_revision"] for row in by_channel.values()} == {1}


@pytest.mark.usefixtures("directory")
async def test_an_older_or_equal_revision_changes_nothing(
    decider: AlertDecider, session: AsyncSession
) -> None:
    newer = response(revision=2, comment="Latest words.")
    await decide(decider, session, newer)

    older = response(response_id=newer.response_id, revision=1, comment="Earlier words.")
    assert await decide(decider, session, older) is DecideOutcome.STALE

    (alert,) = await rows(session, "SELECT revision, comment FROM alerts")
    assert alert == {"revision": 2, "comment": "Latest words."}


@pytest.mark.usefixtures("directory")
async def test_a_revision_queues_an_edit_of_chat_messages_already_sent(
    decider: AlertDecider, session: AsyncSession
) -> None:
    first = response(comment=None)
    await decide(decider, session, first)
    await session.execute(
        text(
            "UPDATE deliveries SET status = 'sent', editable = (channel <> 'email'),"
            ' rendered_revision = 0, external_ref = \'{"kind": "console", "sequence": 1}\','
            " attempts = 1, next_attempt_at = now() + interval '1 hour'"
        )
    )

    await decide(decider, session, response(response_id=first.response_id, revision=1))

    by_channel = await deliveries(session, first)
    assert by_channel["telegram"]["status"] == "pending"
    assert by_channel["telegram"]["attempts"] == 0
    assert by_channel["slack"]["status"] == "pending"
    assert by_channel["email"]["status"] == "sent"  # mail cannot be edited


@pytest.mark.usefixtures("directory")
async def test_an_unknown_account_is_never_dropped_it_reaches_the_team(
    decider: AlertDecider, session: AsyncSession
) -> None:
    event = response(account_id="acc-unknown")

    assert await decide(decider, session, event) is DecideOutcome.CREATED

    (alert,) = await rows(session, "SELECT * FROM alerts")
    assert alert["account_known"] is False
    assert alert["account_name"] == "acc-unknown"
    assert alert["owner_id"] == "team"
    by_channel = await deliveries(session, event)
    assert list(by_channel) == ["email"]
    assert by_channel["email"]["recipient_id"] == "team"


@pytest.mark.usefixtures("directory")
async def test_sla_deadlines_follow_the_segment_policy(
    decider: AlertDecider, session: AsyncSession
) -> None:
    await add_account(
        session, "acc-big", name="Big Wholesale", segment="Wholesale", owner_id="olivia"
    )
    event = response(account_id="acc-big")
    await decide(decider, session, event)

    (alert,) = await rows(session, "SELECT * FROM alerts")
    assert alert["acknowledge_due_at"] == event.received_at + timedelta(hours=1)
    assert alert["resolve_due_at"] == event.received_at + timedelta(hours=8)


@pytest.mark.usefixtures("directory")
async def test_promoters_get_no_deadline_by_default(
    decider: AlertDecider, session: AsyncSession
) -> None:
    await decide(decider, session, response(score=10))

    (alert,) = await rows(session, "SELECT acknowledge_due_at, resolve_due_at FROM alerts")
    assert alert == {"acknowledge_due_at": None, "resolve_due_at": None}


def _record(value: bytes | None, headers: list[tuple[str, bytes]]) -> ConsumedRecord:
    return ConsumedRecord(
        topic="npsloop.responses.v1",
        partition=0,
        offset=7,
        key=b"acc-1",
        value=value,
        headers=tuple(headers),
        timestamp_ms=0,
    )


def test_a_valid_record_decodes_with_its_cloudevents_id() -> None:
    event = response()
    ce_id = uuid.uuid4()
    record = _record(
        event.model_dump_json().encode(),
        [("ce_id", str(ce_id).encode()), ("ce_type", b"io.npsloop.response.received.v1")],
    )

    assert decode_response(record) == (ce_id, event)


def test_without_a_ce_id_the_deterministic_id_is_used() -> None:
    event = response()

    assert decode_response(_record(event.model_dump_json().encode(), []))[0] == event.event_id


@pytest.mark.parametrize(
    ("value", "headers"),
    [
        (b"{not json", []),
        (b'{"response_id": "x"}', []),
        (None, []),
        (response().model_dump_json().encode(), [("ce_type", b"io.other.thing.v1")]),
        (response().model_dump_json().encode(), [("ce_id", b"not-a-uuid")]),
    ],
    ids=["malformed", "contract-violation", "no-value", "wrong-type", "bad-ce-id"],
)
def test_a_record_that_breaks_the_contract_is_permanent(
    value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    with pytest.raises(PermanentMessageError):
        decode_response(_record(value, headers))


@pytest.mark.usefixtures("directory")
async def test_a_large_poll_is_written_exactly_and_its_events_keep_their_order(
    decider: AlertDecider, session: AsyncSession
) -> None:
    sao_paulo = timezone(timedelta(hours=-3))
    scores_only = [
        response(
            comment=None,
            attributes={"plan": f"p{i}", "emoji": "🚚"},
            submitted_at=datetime(2026, 11, 1, 9, 30, 15, 123_456 + i, tzinfo=sao_paulo),
        )
        for i in range(30)
    ]
    comments = [
        response(
            response_id=event.response_id,
            revision=1,
            comment=f"Comment {i} 取消",
            attributes={**event.attributes, "completed": "yes"},
        )
        for i, event in enumerate(scores_only[:10])
    ]
    batch = scores_only[:20] + comments + scores_only[20:]

    results = await decider.decide_many(
        AlertRepository(await driver_connection(session)),
        [(event.event_id, event) for event in batch],
    )

    assert [result.outcome for result in results] == (
        [DecideOutcome.CREATED] * 20 + [DecideOutcome.UPDATED] * 10 + [DecideOutcome.CREATED] * 10
    )
    assert {result.deliveries_created for result in results[:20] + results[30:]} == {3}
    stored = {
        row["response_id"]: row
        for row in await rows(session, "SELECT * FROM alerts WHERE source = 'api'")
    }
    assert len(stored) == 30
    for i, event in enumerate(scores_only):
        alert = stored[event.response_id]
        latest = comments[i] if i < 10 else event
        assert alert["submitted_at"] == latest.submitted_at  # to the microsecond, any offset
        assert alert["attributes"] == latest.attributes
        assert latest.respondent is not None
        assert alert["respondent"] == latest.respondent.model_dump(mode="json")
        assert (alert["revision"], alert["comment"]) == (
            (1, f"Comment {i} 取消") if i < 10 else (0, None)
        )
        # The comment released the held email of the first ten; the others still wait.
        email = (await deliveries(session, event))["email"]
        assert email["awaiting_comment"] is (i >= 10)
        assert email["content_revision"] == (1 if i < 10 else 0)
    subjects = [
        dict(row["headers"])["ce_subject"]
        for row in await rows(session, "SELECT headers FROM alert_outbox ORDER BY id")
    ]
    assert subjects == [str(alert_id_for("api", event.response_id)) for event in scores_only]


async def _deliveries_read(session: AsyncSession) -> int:
    """Rows of `deliveries` this transaction has read so far, by scans and index fetches."""
    (counts,) = await rows(
        session,
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS n"
        " FROM pg_stat_xact_user_tables WHERE relname = 'deliveries'",
    )
    return int(counts["n"])


async def _many_alerts(decider: AlertDecider, repository: AlertRepository, count: int) -> None:
    """`count` new alerts, decided the way a busy consumer does: small polls first (PostgreSQL
    caches a generic plan after a few), then large ones, the table outgrowing its statistics."""
    for _ in range(8):
        await decider.decide(repository, (event := response()).event_id, event)
    many = [response() for _ in range(count - 8)]
    await decider.decide_many(repository, [(event.event_id, event) for event in many])


@pytest.mark.usefixtures("directory")
async def test_deciding_new_responses_reads_no_deliveries_however_many_there_are(
    decider: AlertDecider, session: AsyncSession
) -> None:
    repository = AlertRepository(await driver_connection(session))
    await _many_alerts(decider, repository, 600)
    before = await _deliveries_read(session)

    for _ in range(3):
        result = await decider.decide(repository, (event := response()).event_id, event)
        assert result.outcome is DecideOutcome.CREATED

    assert await _deliveries_read(session) - before < 10  # not the 1,800 there are


@pytest.mark.usefixtures("directory")
async def test_a_revision_reads_only_its_own_alerts_deliveries_however_many_there_are(
    decider: AlertDecider, session: AsyncSession
) -> None:
    # The revision part of the decide statement once joined every delivery with the poll's
    # updated alerts: a scan on every poll that holds a revision, growing with the table.
    repository = AlertRepository(await driver_connection(session))
    first = response(comment=None)
    await decider.decide(repository, first.event_id, first)
    await _many_alerts(decider, repository, 600)
    assert len(await rows(session, "SELECT id FROM deliveries")) == 3 * 601
    before = await _deliveries_read(session)

    comment = response(response_id=first.response_id, revision=1, comment="Still waiting.")
    new = response()
    results = await decider.decide_many(
        repository, [(comment.event_id, comment), (new.event_id, new)]
    )

    assert [r.outcome for r in results] == [DecideOutcome.UPDATED, DecideOutcome.CREATED]
    assert not (await deliveries(session, first))["email"]["awaiting_comment"]
    assert await _deliveries_read(session) - before <= 10  # its own three, not all 1,800
