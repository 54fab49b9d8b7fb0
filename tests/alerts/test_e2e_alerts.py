"""End to end: responses posted to `npsloop-ingest` reach their owners through real Kafka,
`npsloop-alerts serve` (a subprocess) and PostgreSQL, by email (aiosmtpd), Slack and Telegram
(local API servers that check what a real vendor would check)."""

from __future__ import annotations

import asyncio
import html
import os
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from npsloop_shared.contracts import AlertEventKind, AlertLifecycleEvent
from tests.alerts.alerting_support import System
from tests.alerts.conftest import CreateDatabase
from tests.fakes.samples import CJK, HOSTILE_COMMENTS, SCRIPT
from tests.fakes.server import Scripted
from tests.fakes.slack_api import SlackMessage, pings, rate_limited
from tests.fakes.telegram_api import error

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture(scope="module")
async def system(
    kafka_bootstrap: str,
    create_migrated_database: CreateDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[System]:
    async with System.running(
        kafka_bootstrap,
        await create_migrated_database(),
        f"npsloop.responses.v1.e2e{uuid.uuid4().hex[:8]}",
        tmp_path_factory.mktemp("e2e"),
    ) as running:
        yield running


def _slack_posts(system: System, channel: str) -> list[SlackMessage]:
    """Messages Slack accepted into `channel` (refused calls leave nothing there)."""
    return [message for message in system.slack.messages.values() if message.channel == channel]


async def test_a_detractor_reaches_its_owner_on_every_channel_in_their_language(
    system: System,
) -> None:
    account, _ = await system.owner(
        email="lucas@acme.example",
        slack_channel="C0LUCAS",
        telegram_chat_id="1101",
        locale="pt-BR",
        timezone="America/Sao_Paulo",
    )

    await system.post(
        response_id=f"r-{uuid.uuid4().hex[:8]}",
        account_id=account,
        score=2,
        comment="A entrega atrasou de novo.",
        respondent={"name": "Ana Lima"},
    )

    (mail,) = await system.mail.wait_for(1, "lucas@acme.example")
    await system.slack.wait_for(1, "chat.postMessage")
    await system.wait_delivery(account, "telegram", "sent")
    assert "Detrator" in str(mail.message["Subject"])
    assert mail.message["Content-Language"] == "pt-BR"
    assert "A entrega atrasou de novo." in mail.body()
    assert "Ana Lima" in mail.body("html")
    (post,) = _slack_posts(system, "C0LUCAS")
    assert "Detrator" in str(post.blocks)
    assert "A entrega atrasou de novo." in str(post.blocks)
    (message,) = system.telegram.chat("1101")
    assert "Detrator" in message.text
    assert "A entrega atrasou de novo." in message.text
    assert "checkout" in message.text


async def test_the_same_response_posted_twice_is_one_alert_and_one_message_per_channel(
    system: System,
) -> None:
    account, _ = await system.owner(
        email="twice@acme.example", slack_channel="C0TWICE", telegram_chat_id="1102"
    )
    response_id = f"r-{uuid.uuid4().hex[:8]}"
    fields = {"response_id": response_id, "account_id": account, "score": 4, "comment": "Again."}
    first = await system.post(**fields)
    second = await system.post(**fields)
    assert first["ids"] == second["ids"]  # the same ce_id: consumers dedupe on it
    # Same account, same partition: once this later response is decided, so is the repeat.
    marker = f"r-{uuid.uuid4().hex[:8]}"
    await system.post(response_id=marker, account_id=account, score=9, comment="Marker.")
    await system.alert_of(account, marker)
    for channel in ("email", "slack", "telegram"):
        await system.wait_delivery(account, channel, "sent", response_id=response_id)

    alert = await system.alert_of(account, response_id)
    assert len(alert["deliveries"]) == 3
    assert len(system.mail.to("twice@acme.example")) == 1
    assert len([p for p in _slack_posts(system, "C0TWICE") if "Again." in str(p.blocks)]) == 1
    assert len(system.telegram.chat("1102")) == 1  # the promoter marker goes to Slack only


async def test_score_first_then_comment_edits_chat_messages_and_sends_one_complete_email(
    system: System,
) -> None:
    account, _ = await system.owner(
        email="late@acme.example", slack_channel="C0LATE", telegram_chat_id="1103"
    )
    response_id = f"r-{uuid.uuid4().hex[:8]}"
    await system.post(response_id=response_id, account_id=account, score=1)
    await system.wait_delivery(account, "telegram", "sent")
    await system.wait_delivery(account, "slack", "sent")

    await system.post(
        response_id=response_id, revision=1, account_id=account, score=1, comment="Rude courier."
    )
    for channel in ("email", "slack", "telegram"):
        await system.wait_delivery(account, channel, "sent", rendered_revision=1)

    alert = await system.alert_of(account)
    assert alert["revision"] == 1
    assert alert["comment"] == "Rude courier."
    (message,) = system.telegram.chat("1103")
    assert "Rude courier." in message.text
    assert len(message.history) == 1
    (slack_message,) = [m for m in system.slack.messages.values() if m.channel == "C0LATE"]
    assert "Rude courier." in str(slack_message.blocks)
    assert len(slack_message.history) == 1
    (mail,) = system.mail.to("late@acme.example")
    assert "Rude courier." in mail.body()


async def test_hostile_comments_arrive_escaped_and_truncated_on_every_channel(
    system: System,
) -> None:
    comments = {name: text[:5_000] for name, text in HOSTILE_COMMENTS.items()}  # ingest's limit
    owners: dict[str, tuple[str, str]] = {}
    for number, (name, comment) in enumerate(comments.items()):
        chat = str(1200 + number)
        account, _ = await system.owner(
            email=f"{name.replace('_', '-')}@acme.example",
            slack_channel=f"C0HOST{number}",
            telegram_chat_id=chat,
        )
        owners[name] = (account, chat)
        await system.post(
            response_id=f"r-{uuid.uuid4().hex[:8]}", account_id=account, score=0, comment=comment
        )
    for account, _ in owners.values():
        for channel in ("email", "slack", "telegram"):
            await system.wait_delivery(account, channel, "sent")

    for number, (name, (_, chat)) in enumerate(owners.items()):
        (post,) = _slack_posts(system, f"C0HOST{number}")
        assert pings(post) == [], name
        sections = [
            b["text"]["text"] for b in post.blocks if b.get("type") == "section" and "text" in b
        ]
        assert all(len(text) <= 3_000 for text in sections), name
        (message,) = system.telegram.chat(chat)
        assert len(message.text) <= 4_096, name
        (mail,) = system.mail.to(f"{name.replace('_', '-')}@acme.example")
        assert "<script>" not in mail.body("html"), name
    (script_message,) = system.telegram.chat(owners["script"][1])
    assert "<script>alert('x')</script>" in script_message.text  # shown, not interpreted
    assert SCRIPT in system.mail.to("script@acme.example")[0].body()
    (cjk_message,) = system.telegram.chat(owners["cjk"][1])
    assert CJK in cjk_message.text
    (long_message,) = system.telegram.chat(owners["long"][1])
    # The link to the full text opens without any admin token: its signature is the key.
    link = re.search(r'href="(https://npsloop\.test/alerts/[^"]+)"', long_message.html)
    assert link is not None
    assert system.alerts is not None
    page_url = html.unescape(link[1]).replace("https://npsloop.test", system.alerts.url)
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(page_url)
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    assert html.escape(comments["long"], quote=False) in page.text  # whole, escaped
    assert comments["long"] not in long_message.text


async def test_a_slack_429_retry_after_is_honoured(system: System) -> None:
    account, _ = await system.owner(slack_channel="C0RATED")
    system.slack.script(rate_limited(2, api=True), endpoint="chat.postMessage")

    await system.post(response_id=f"r-{uuid.uuid4().hex[:8]}", account_id=account, score=5)
    delivery = await system.wait_delivery(account, "slack", "sent")

    refused, accepted = [
        post
        for post in system.slack.received("chat.postMessage")
        if "C0RATED" in post.body.decode()
    ]
    assert refused.status == 429
    assert accepted.received_at - refused.received_at >= 2.0
    detail = await system.admin("GET", f"/v1/deliveries/{delivery['id']}")
    assert [a["outcome"] for a in detail["attempt_history"]] == ["transient", "sent"]


async def test_5xx_and_timeouts_are_retried_until_the_message_is_sent(system: System) -> None:
    account, _ = await system.owner(telegram_chat_id="1301")
    system.telegram.script(
        error(500, "Internal Server Error"), Scripted.slow(3), endpoint="sendMessage"
    )

    await system.post(response_id=f"r-{uuid.uuid4().hex[:8]}", account_id=account, score=3)
    delivery = await system.wait_delivery(account, "telegram", "sent")

    detail = await system.admin("GET", f"/v1/deliveries/{delivery['id']}")
    history = [(a["outcome"], a["error_reason"]) for a in detail["attempt_history"]]
    assert history[0][0] == "transient"
    assert history[1] == ("transient", "timeout")
    assert history[2] == ("sent", None)
    assert len(system.telegram.chat("1301")) == 1


async def test_a_permanent_error_ends_dead_and_a_redrive_through_the_api_sends_it(
    system: System,
) -> None:
    account, _ = await system.owner(telegram_chat_id="1401")
    system.telegram.blocked_chats.add("1401")

    await system.post(response_id=f"r-{uuid.uuid4().hex[:8]}", account_id=account, score=6)
    dead = await system.wait_delivery(account, "telegram", "dead")
    assert dead["attempts"] == 1
    assert "blocked" in dead["last_error"]
    dead_list = await system.admin("GET", "/v1/deliveries", params={"status": "dead"})
    assert dead["id"] in [item["id"] for item in dead_list["items"]]

    system.telegram.blocked_chats.discard("1401")
    await system.admin("POST", f"/v1/deliveries/{dead['id']}/redrive")
    await system.wait_delivery(account, "telegram", "sent")
    assert len(system.telegram.chat("1401")) == 1


async def test_the_redrive_command_sends_a_dead_delivery(system: System) -> None:
    account, _ = await system.owner(slack_channel="C0ARCHIVED")
    system.slack.archived_channels.add("C0ARCHIVED")
    await system.post(response_id=f"r-{uuid.uuid4().hex[:8]}", account_id=account, score=6)
    dead = await system.wait_delivery(account, "slack", "dead")
    system.slack.archived_channels.discard("C0ARCHIVED")

    assert system.alerts is not None
    process = await asyncio.create_subprocess_exec(
        system.alerts.args[0],
        "redrive",
        dead["id"],
        env={**os.environ, **system.alerts_env()},
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()

    assert process.returncode == 0, output
    assert re.search(rf"{dead['id']}\s+re-driven", output.decode())
    await system.wait_delivery(account, "slack", "sent")
    assert len(_slack_posts(system, "C0ARCHIVED")) == 1


async def test_a_created_event_is_published_on_the_alerts_topic_keyed_by_account(
    system: System,
) -> None:
    account, person = await system.owner(email="events@acme.example")
    response_id = f"r-{uuid.uuid4().hex[:8]}"
    await system.post(response_id=response_id, account_id=account, score=7, comment="Fine.")
    alert = await system.alert_of(account)

    consumer = AIOKafkaConsumer(
        f"{system.topic}.alerts",
        bootstrap_servers=system.kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        found = None
        async with asyncio.timeout(30):
            while found is None:
                batch = await consumer.getmany(timeout_ms=500)
                for record in (r for records in batch.values() for r in records):
                    if record.key == account.encode():
                        found = record
    finally:
        await consumer.stop()

    event = AlertLifecycleEvent.model_validate_json(found.value)
    headers = {key: value.decode() for key, value in found.headers}
    assert headers["ce_type"] == "io.npsloop.alert.created.v1"
    assert event.event is AlertEventKind.CREATED
    assert str(event.alert_id) == alert["id"]
    assert (event.response_id, event.owner_id, event.bucket.value) == (
        response_id,
        person,
        "passive",
    )


async def test_metrics_show_deliveries_queue_and_consumer_lag(system: System) -> None:
    account, _ = await system.owner(telegram_chat_id="1501")
    await system.post(response_id=f"r-{uuid.uuid4().hex[:8]}", account_id=account, score=0)
    await system.wait_delivery(account, "telegram", "sent")
    assert system.alerts is not None

    async with httpx.AsyncClient() as client:
        await asyncio.sleep(5.5)  # the queue gauges refresh every 5 s
        text = (await client.get(f"{system.alerts.url}/metrics")).text

    assert re.search(
        r'npsloop_alerts_deliveries_total\{channel="telegram",outcome="sent"\} [1-9]', text
    )
    assert 'npsloop_alerts_delivery_queue{state="pending"}' in text
    assert "npsloop_alerts_delivery_oldest_due_seconds" in text
    assert 'npsloop_alerts_responses_total{outcome="created"}' in text
    assert f'npsloop_consumer_lag{{group="{system.topic}.group"' in text
