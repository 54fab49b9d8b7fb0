"""The delivery loop on a real PostgreSQL against local Slack, Telegram and SMTP servers:
sends, retries (hints, 5xx, timeouts), dead ends and re-drive, pacing, edits, leases, replicas."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from npsloop_alerts.alerting.directory_view import DirectoryView
from npsloop_alerts.alerting.links import AlertLinks
from npsloop_alerts.alerting.service import AlertDecider, DeciderConfig
from npsloop_alerts.delivery.channels import ChannelProviders
from npsloop_alerts.delivery.dispatch import Dispatcher
from npsloop_alerts.delivery.loop import DeliveryLoop, LoopConfig
from npsloop_alerts.delivery.metrics import delivery_metrics
from npsloop_alerts.delivery.repository import Claimed, DeliveryRepository
from npsloop_alerts.delivery.service import DeliveryService
from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.db import create_engine, create_sessionmaker, session_scope
from npsloop_shared.driver_db import DriverPool
from tests.alerts.alerting_support import (
    MailSink,
    Pipeline,
    add_account,
    add_person,
    response,
)
from tests.alerts.conftest import CreateDatabase
from tests.fakes.server import Scripted
from tests.fakes.slack_api import DEFAULT_BOT_TOKEN, FakeSlack, api_error, rate_limited
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram, error, too_many_requests

LoopFactory = Callable[..., Any]


@pytest.fixture(scope="module")
async def loop_database(create_migrated_database: CreateDatabase) -> str:
    return await create_migrated_database()


def _settings(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, mail: MailSink, **overrides: Any
) -> AlertsSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "smtp_url": mail.url,
        "slack_api_url": slack.api_url,
        "slack_bot_token": SecretStr(DEFAULT_BOT_TOKEN),
        "telegram_api_url": telegram.api_url,
        "telegram_bot_token": SecretStr(DEFAULT_TOKEN),
        "alerts_slack_bot_mode": True,
        "alerts_email_hold_seconds": 60,
        "delivery_backoff_base_seconds": 0.2,
        "delivery_backoff_factor": 2,
        "delivery_backoff_jitter": 0,
        "delivery_max_attempts": 3,
        "delivery_send_timeout_seconds": 1,
        "delivery_lease_seconds": 4,
        "delivery_rate_window_seconds": 2,
        "delivery_poll_interval_seconds": 0.2,
        "delivery_disable_after_permanent_failures": 2,
        **overrides,
    }
    return AlertsSettings(**values)


@pytest.fixture
async def pipeline(loop_database: str) -> AsyncIterator[Pipeline]:
    async with AsyncExitStack() as stack:
        slack = await stack.enter_async_context(FakeSlack())
        telegram = await stack.enter_async_context(FakeTelegram())
        mail = await MailSink().start()
        stack.push_async_callback(mail.stop)
        settings = _settings(loop_database, slack, telegram, mail)
        engine = create_engine(loop_database, application_name="test-delivery-loop")
        stack.push_async_callback(engine.dispose)
        sessionmaker = create_sessionmaker(engine)
        decider = AlertDecider(
            DirectoryView(settings.channel_config()),
            DeciderConfig(
                email_hold=timedelta(seconds=settings.alerts_email_hold_seconds),
                sla_policy=settings.alerts_sla_policy,
                events_topic=settings.alerts_events_topic,
            ),
        )
        yield Pipeline(settings, sessionmaker, engine, decider, [], slack, telegram, mail)


LOOP_CONNECTIONS = "test-delivery-loop-driver"


async def start_loop(pipeline: Pipeline, stack: AsyncExitStack, **overrides: Any) -> DeliveryLoop:
    settings = pipeline.settings.model_copy(update=overrides)
    providers = ChannelProviders.from_settings(settings)
    stack.push_async_callback(providers.aclose)
    database = DriverPool(settings.database_url, application_name=LOOP_CONNECTIONS, max_size=5)
    stack.push_async_callback(database.close)
    loop = DeliveryLoop(
        database,
        database_url=settings.database_url,
        dispatcher=Dispatcher(providers, links=AlertLinks.from_settings(settings), send_timeout=1),
        config=LoopConfig.from_settings(settings),
        metrics=delivery_metrics(),
    )
    await loop.start()
    stack.push_async_callback(loop.stop)
    pipeline.loops.append(loop)
    return loop


async def owner(pipeline: Pipeline, **contact: Any) -> str:
    """A fresh account owned by a fresh person with the given addresses; returns the account."""
    suffix = uuid.uuid4().hex[:8]
    async with session_scope(pipeline.sessionmaker) as session:
        await add_person(session, f"p-{suffix}", name=f"Owner {suffix}", **contact)
        await add_person(session, f"m-{suffix}", email_address=f"manager-{suffix}@acme.example")
        await add_account(
            session, f"acc-{suffix}", owner_id=f"p-{suffix}", manager_id=f"m-{suffix}"
        )
    return f"acc-{suffix}"


async def test_a_detractor_is_sent_on_every_channel_and_each_attempt_is_recorded(
    pipeline: Pipeline,
) -> None:
    account = await owner(
        pipeline,
        email_address="olivia@acme.example",
        slack_channel="C0OLIVIA",
        telegram_chat_id="1001",
    )
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        alert_id = await pipeline.respond(response(account_id=account, comment="Never again."))
        for channel in ("email", "slack", "telegram"):
            await pipeline.wait_status(alert_id, channel, "sent")

    (mail,) = pipeline.mail.to("olivia@acme.example")
    assert "Never again." in mail.body()
    (post,) = pipeline.slack.received("chat.postMessage")
    assert post.json()["channel"] == "C0OLIVIA"
    (message,) = pipeline.telegram.chat("1001")
    assert "Never again." in message.text
    deliveries = await pipeline.deliveries(alert_id)
    for delivery in deliveries.values():
        (attempt,) = await pipeline.attempts(delivery["id"])
        assert attempt["outcome"] == "sent"
        assert attempt["latency_ms"] is not None
        assert delivery["rendered_revision"] == 0
    assert deliveries["telegram"]["external_ref"]["message_id"] == message.message_id
    assert deliveries["telegram"]["editable"] is True
    assert deliveries["email"]["editable"] is False


@pytest.mark.parametrize(("linger", "one_write"), [(1.0, True), (0.0, False)])
async def test_outcomes_finishing_within_the_record_linger_are_recorded_in_one_write(
    pipeline: Pipeline, linger: float, one_write: bool
) -> None:
    suffix = uuid.uuid4().hex[:6]
    account = await owner(
        pipeline,
        email_address=f"linger-{suffix}@acme.example",
        slack_channel=f"C0LINGER{suffix}",
        telegram_chat_id=str(int(suffix, 16)),
    )
    pipeline.telegram.script(Scripted.slow(0.3), endpoint="sendMessage")  # answers 0.3 s later
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack, delivery_record_linger_seconds=linger)
        alert_id = await pipeline.respond(response(account_id=account))
        for channel in ("email", "slack", "telegram"):
            await pipeline.wait_status(alert_id, channel, "sent")

    deliveries = await pipeline.deliveries(alert_id)
    # A write is one statement, and every row it touches carries that statement's now().
    written_at = {delivery["updated_at"] for delivery in deliveries.values()}
    assert (len(written_at) == 1) is one_write


async def test_a_429_retry_after_is_honoured_before_the_next_attempt(pipeline: Pipeline) -> None:
    account = await owner(pipeline, slack_channel="C0RATE")
    pipeline.slack.script(rate_limited(2, api=True), endpoint="chat.postMessage")
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        alert_id = await pipeline.respond(response(account_id=account))
        delivery = await pipeline.wait_status(alert_id, "slack", "sent", within=20)

    first, second = pipeline.slack.received("chat.postMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 2.0
    attempts = await pipeline.attempts(delivery["id"])
    assert [a["outcome"] for a in attempts] == ["transient", "sent"]
    assert attempts[0]["retry_after_seconds"] == 2


async def test_telegram_retry_after_parameter_is_honoured(pipeline: Pipeline) -> None:
    account = await owner(pipeline, telegram_chat_id="2002")
    pipeline.telegram.script(too_many_requests(1), endpoint="sendMessage")
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        alert_id = await pipeline.respond(response(account_id=account))
        await pipeline.wait_status(alert_id, "telegram", "sent")

    first, second = pipeline.telegram.received("sendMessage")
    assert first.status == 429
    assert second.received_at - first.received_at >= 1.0


async def test_5xx_and_timeouts_are_retried_with_backoff_until_sent(pipeline: Pipeline) -> None:
    account = await owner(pipeline, telegram_chat_id="3003")
    pipeline.telegram.script(error(502, "Bad Gateway"), Scripted.slow(2.5), endpoint="sendMessage")
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        alert_id = await pipeline.respond(response(account_id=account))
        delivery = await pipeline.wait_status(alert_id, "telegram", "sent", within=20)

    attempts = await pipeline.attempts(delivery["id"])
    assert [(a["outcome"], a["vendor_status"], a["error_reason"]) for a in attempts] == [
        ("transient", 502, "bad_gateway"),
        ("transient", None, "timeout"),
        ("sent", 200, None),
    ]
    assert attempts[1]["started_at"] - attempts[0]["started_at"] >= timedelta(seconds=0.2)
    assert attempts[2]["started_at"] - attempts[1]["started_at"] >= timedelta(seconds=0.4)


async def test_transient_failures_end_dead_when_attempts_run_out(pipeline: Pipeline) -> None:
    account = await owner(pipeline, telegram_chat_id="3004")
    pipeline.telegram.script(*[error(503, "Unavailable")] * 3, endpoint="sendMessage")
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        alert_id = await pipeline.respond(response(account_id=account))
        delivery = await pipeline.wait_status(alert_id, "telegram", "dead", within=20)

    assert delivery["attempts"] == 3
    assert "503" in delivery["last_error"]


async def test_a_permanent_error_is_dead_at_once_and_a_redrive_sends_it(
    pipeline: Pipeline,
) -> None:
    account = await owner(pipeline, slack_channel="C0GONE")
    pipeline.slack.script(api_error("channel_not_found"), endpoint="chat.postMessage")
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        alert_id = await pipeline.respond(response(account_id=account, comment="Hello?"))
        dead = await pipeline.wait_status(alert_id, "slack", "dead")
        assert dead["attempts"] == 1
        assert dead["last_error_class"] == "PermanentDeliveryError"

        async with session_scope(pipeline.sessionmaker) as session:
            assert await DeliveryService(session).redrive([dead["id"]]) == [dead["id"]]
        sent = await pipeline.wait_status(alert_id, "slack", "sent")

    assert sent["attempts"] == 1  # the re-driven try; the dead one was reset by the re-drive
    outcomes = [a["outcome"] for a in await pipeline.attempts(dead["id"])]
    assert outcomes == ["permanent", "sent"]
    assert len(pipeline.slack.messages) == 1


async def test_repeated_permanent_failures_disable_the_destination_and_tell_the_manager(
    pipeline: Pipeline,
) -> None:
    pipeline.telegram.blocked_chats.add("4004")
    accounts = [await owner(pipeline, telegram_chat_id="4004") for _ in range(3)]
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        first = await pipeline.respond(response(account_id=accounts[0]))
        await pipeline.wait_status(first, "telegram", "dead")
        second = await pipeline.respond(response(account_id=accounts[1]))
        await pipeline.wait_status(second, "telegram", "dead")
        manager = f"manager-{accounts[1].removeprefix('acc-')}@acme.example"
        (notice,) = await pipeline.mail.wait_for(1, manager)
        # Disabled: the next message to that chat is not even tried.
        third = await pipeline.respond(response(account_id=accounts[2]))
        dead = await pipeline.wait_status(third, "telegram", "dead")

    assert "paused" in str(notice.message["Subject"])
    assert "bot was blocked" in notice.body().lower() or "blocked" in notice.body().lower()
    assert len(pipeline.telegram.received("sendMessage")) == 2
    (attempt,) = await pipeline.attempts(dead["id"])
    assert attempt["outcome"] == "destination_disabled"
    (destination,) = await pipeline.query(
        "SELECT * FROM delivery_destinations WHERE key = 'telegram:4004'"
    )
    assert destination["disabled_at"] is not None


async def test_messages_to_one_channel_are_paced_to_its_rate_limit(pipeline: Pipeline) -> None:
    pipeline.slack.rate_limit = None
    account = await owner(pipeline, slack_channel="C0BUSY")
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack, delivery_slack_interval_seconds=0.5)
        alerts = [await pipeline.respond(response(account_id=account)) for _ in range(4)]
        for alert_id in alerts:
            await pipeline.wait_status(alert_id, "slack", "sent")

    times = sorted(post.received_at for post in pipeline.slack.received("chat.postMessage"))
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) == 4
    # Slots are handed out 0.5 s apart at the sender. Arrival times add each send's latency, and
    # the first send also opens the connection, which can eat into the first gap; so check the
    # span of the later arrivals and that no two arrived back to back (unpaced: ~0 s apart).
    assert times[-1] - times[1] >= 2 * 0.5 * 0.9
    assert min(gaps) >= 0.15


async def test_a_revision_edits_the_chat_messages_in_place(pipeline: Pipeline) -> None:
    account = await owner(
        pipeline, email_address="e@acme.example", slack_channel="C0EDIT", telegram_chat_id="5005"
    )
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        first = response(account_id=account, comment=None)
        alert_id = await pipeline.respond(first)
        await pipeline.wait_status(alert_id, "telegram", "sent")
        await pipeline.wait_status(alert_id, "slack", "sent")
        await pipeline.respond(
            response(
                account_id=account,
                response_id=first.response_id,
                revision=1,
                comment="The courier was rude.",
            )
        )
        await pipeline.wait_until(
            "SELECT count(*) FROM deliveries WHERE alert_id = :a AND rendered_revision = 1",
            3,
            a=alert_id,
        )

    (message,) = pipeline.telegram.chat("5005")
    assert "The courier was rude." in message.text
    assert len(message.history) == 1
    assert len(pipeline.telegram.received("editMessageText")) == 1
    (slack_message,) = pipeline.slack.messages.values()
    assert "The courier was rude." in str(slack_message.blocks)
    # The email waited for the comment: one mail, complete.
    (mail,) = pipeline.mail.to("e@acme.example")
    assert "The courier was rude." in mail.body()


async def test_a_delivery_abandoned_mid_send_is_sent_after_its_lease_expires(
    pipeline: Pipeline,
) -> None:
    account = await owner(pipeline, telegram_chat_id="6006")
    alert_id = await pipeline.respond(response(account_id=account))
    # A replica claimed it and died: in flight, lease already expired.
    async with pipeline.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE deliveries SET status = 'in_flight', attempts = 1,"
                " claim_token = gen_random_uuid(), next_attempt_at = now() - interval '1 second'"
                " WHERE alert_id = :a"
            ),
            {"a": alert_id},
        )
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        delivery = await pipeline.wait_status(alert_id, "telegram", "sent")

    outcomes = [a["outcome"] for a in await pipeline.attempts(delivery["id"])]
    assert outcomes == ["lease_expired", "sent"]


async def test_two_replicas_send_every_delivery_exactly_once(pipeline: Pipeline) -> None:
    accounts = [await owner(pipeline, telegram_chat_id=str(7000 + n)) for n in range(30)]
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack, delivery_claim_batch_size=4)
        await start_loop(pipeline, stack, delivery_claim_batch_size=4)
        alerts = await asyncio.gather(
            *(pipeline.respond(response(account_id=account)) for account in accounts)
        )
        for alert_id in alerts:
            await pipeline.wait_status(alert_id, "telegram", "sent")

    chats = [message.chat_id for message in pipeline.telegram.messages.values()]
    assert sorted(chats) == sorted(str(7000 + n) for n in range(30))


async def test_the_loop_carries_on_after_the_database_drops_its_connections(
    pipeline: Pipeline,
) -> None:
    account = await owner(pipeline, telegram_chat_id="4242")
    async with AsyncExitStack() as stack:
        await start_loop(pipeline, stack)
        first = await pipeline.respond(response(account_id=account))
        await pipeline.wait_status(first, "telegram", "sent")

        # What a database restart or failover does to every open connection of the loop.
        async with pipeline.engine.connect() as connection:
            dropped = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": LOOP_CONNECTIONS},
            )
        assert dropped
        second = await pipeline.respond(response(account_id=account, comment="Still here?"))
        await pipeline.wait_status(second, "telegram", "sent")

    assert [m.text.count("Still here?") for m in pipeline.telegram.chat("4242")] == [0, 1]


async def test_a_claim_says_when_the_next_delivery_it_left_behind_falls_due(
    pipeline: Pipeline,
) -> None:
    accounts = [await owner(pipeline, telegram_chat_id=str(8100 + n)) for n in range(2)]
    soon, later = [await pipeline.respond(response(account_id=a)) for a in accounts]
    async with pipeline.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE deliveries SET next_attempt_at = now() + interval '30 seconds'"
                " WHERE alert_id = :a"
            ),
            {"a": later},
        )

    database = DriverPool(pipeline.settings.database_url, application_name="test", max_size=1)
    try:
        async with database.transaction() as connection:
            first = await DeliveryRepository(connection).claim_due(10, uuid.uuid4(), 60)
        async with database.transaction() as connection:
            nothing_due = await DeliveryRepository(connection).claim_due(10, uuid.uuid4(), 60)
    finally:
        await database.close()

    assert [row.delivery.alert_id for row in first.rows] == [soon]
    # The claimed row's own lease (60 s) is later than the delivery left waiting.
    assert first.next_due_in is not None
    assert 28 < first.next_due_in <= 30
    assert nothing_due == Claimed([], None)  # nothing claimed: the loop asks separately
