"""Slack channel against the local Slack (webhooks and Web API on a real port)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from npsloop_alerts.channels import (
    DestinationConfigError,
    PermanentDeliveryError,
    SlackDestination,
    SlackProvider,
    SlackRef,
    TransientDeliveryError,
)
from npsloop_alerts.channels.slack import render_slack
from tests.fakes.samples import ARABIC, CJK, HEBREW, HOSTILE_COMMENTS, LONG, PINGS, alert_message
from tests.fakes.server import Scripted
from tests.fakes.slack_api import (
    FakeSlack,
    api_error,
    block_kit_problems,
    pings,
    rate_limited,
    webhook_error,
)


@pytest.fixture(scope="module")
async def slack_server() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(archived_channels={"CARCHIVED"}) as fake:
        yield fake


@pytest.fixture
def slack(slack_server: FakeSlack) -> FakeSlack:
    slack_server.reset()
    return slack_server


@pytest.fixture
def bot(slack: FakeSlack, vendor_client: httpx.AsyncClient) -> SlackProvider:
    return SlackProvider(vendor_client, api_url=slack.api_url, bot_token=SecretStr(slack.bot_token))


@pytest.fixture
def hook_only(vendor_client: httpx.AsyncClient) -> SlackProvider:
    return SlackProvider(vendor_client)


def _section_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [
        block["text"]["text"] for block in blocks if block["type"] == "section" and "text" in block
    ]


async def test_webhook_post_carries_block_kit_and_answers_ok(
    slack: FakeSlack, hook_only: SlackProvider
) -> None:
    destination = SlackDestination(webhook_url=slack.webhook_url())
    receipt = await hook_only.send(hook_only.render(alert_message(), destination), destination)

    assert receipt.vendor_status == 200
    assert receipt.ref == SlackRef()
    assert not hook_only.can_edit(receipt.ref)
    [posted] = slack.webhook_posts
    assert [block["type"] for block in posted["blocks"]] == [
        "header",
        "section",
        "section",
        "context",
        "actions",
    ]
    assert posted["blocks"][0]["text"]["text"] == "🔴 Detractor · 3/10"
    fields = [item["text"] for item in posted["blocks"][1]["fields"]]
    assert "*SLA deadline*\nMar 2, 2026, 2:30\u202fPM EST" in fields
    assert "*Respondent*\nMaria Souza · maria@example.com" in fields
    assert _section_texts(posted["blocks"]) == [
        "*Comment*\nCheckout kept failing &amp; support never answered."
    ]
    buttons = posted["blocks"][4]["elements"]
    assert [button["action_id"] for button in buttons] == ["npsloop.acknowledge", "npsloop.resolve"]
    assert buttons[0]["url"] == "https://npsloop.test/a/a-1/ack?sig=1"
    assert posted["text"].startswith("🔴 Detractor · 3/10 — Acme Retail (retail): Checkout")


@pytest.mark.parametrize("name", sorted(HOSTILE_COMMENTS))
async def test_hostile_comments_arrive_escaped_and_never_ping(
    slack: FakeSlack, hook_only: SlackProvider, name: str
) -> None:
    comment = HOSTILE_COMMENTS[name]
    destination = SlackDestination(webhook_url=slack.webhook_url())
    message = alert_message(comment=comment, account_name="<!everyone> Acme")
    await hook_only.send(hook_only.render(message, destination), destination)

    [posted] = slack.webhook_posts
    assert pings(posted) == []
    assert block_kit_problems(posted) == []
    assert "<script" not in str(posted)
    section = _section_texts(posted["blocks"])[0]
    assert len(section) <= 3_000
    if name != "long":
        escaped = comment.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert section == "*Comment*\n" + escaped


def test_mentions_are_escaped_exactly_as_slack_documents() -> None:
    rendered = render_slack(alert_message(comment=PINGS))
    section = _section_texts(rendered.blocks)[0]
    assert "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt; &lt;@U024BE7LH&gt;" in section
    assert rendered.blocks[2]["text"]["verbatim"] is True


def test_rtl_and_cjk_text_stays_intact() -> None:
    rendered = render_slack(alert_message(comment=f"{ARABIC}\n{HEBREW}\n{CJK}"))
    assert _section_texts(rendered.blocks)[0] == f"*Comment*\n{ARABIC}\n{HEBREW}\n{CJK}"


async def test_long_comment_is_cut_to_the_section_limit_with_a_read_more_link(
    slack: FakeSlack, hook_only: SlackProvider
) -> None:
    destination = SlackDestination(webhook_url=slack.webhook_url())
    await hook_only.send(hook_only.render(alert_message(comment=LONG), destination), destination)
    [posted] = slack.webhook_posts
    section = _section_texts(posted["blocks"])[0]
    assert len(section) <= 3_000
    assert section.endswith(
        "…\n<https://npsloop.test/alerts/a-1/comment?sig=abc&amp;exp=1|Read the full comment>"
    )
    assert "&lt;tags&gt; &amp; entities." in section
    assert not section.split("…")[0].endswith(("&", "&l", "&lt", "&am", "&amp"))
    assert len(posted["text"]) < 500


async def test_long_comment_without_a_full_text_link_is_still_cut() -> None:
    rendered = render_slack(alert_message(comment=LONG, full_text_url=None))
    section = _section_texts(rendered.blocks)[0]
    assert len(section) <= 3_000
    assert section.endswith("…")


async def test_rate_limit_is_transient_with_the_retry_after_hint(
    slack: FakeSlack, hook_only: SlackProvider
) -> None:
    slack.script(rate_limited(7), endpoint="webhook")
    destination = SlackDestination(webhook_url=slack.webhook_url())
    with pytest.raises(TransientDeliveryError) as caught:
        await hook_only.send(hook_only.render(alert_message(), destination), destination)
    assert caught.value.retry_after == 7
    assert caught.value.vendor_status == 429
    assert caught.value.headers == {"Retry-After": "7"}


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(
    slack: FakeSlack, hook_only: SlackProvider, status: int
) -> None:
    slack.script(webhook_error(status, "rollup_error"))
    destination = SlackDestination(webhook_url=slack.webhook_url())
    with pytest.raises(TransientDeliveryError) as caught:
        await hook_only.send(hook_only.render(alert_message(), destination), destination)
    assert caught.value.vendor_status == status
    assert caught.value.reason == "rollup_error"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "no_service"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (403, "action_prohibited"),
        (400, "invalid_payload"),
    ],
)
async def test_webhook_refusals_are_permanent(
    slack: FakeSlack, hook_only: SlackProvider, status: int, code: str
) -> None:
    slack.script(webhook_error(status, code))
    destination = SlackDestination(webhook_url=slack.webhook_url())
    with pytest.raises(PermanentDeliveryError) as caught:
        await hook_only.send(hook_only.render(alert_message(), destination), destination)
    assert (caught.value.vendor_status, caught.value.reason) == (status, code)


async def test_revoked_webhook_is_permanent(slack: FakeSlack, hook_only: SlackProvider) -> None:
    url = slack.webhook_url(secret="revoked")
    slack.revoke(url)
    destination = SlackDestination(webhook_url=url)
    with pytest.raises(PermanentDeliveryError) as caught:
        await hook_only.send(hook_only.render(alert_message(), destination), destination)
    assert caught.value.reason == "no_service"


async def test_timeout_is_transient(slack: FakeSlack) -> None:
    slack.script(Scripted.slow(1.0))
    destination = SlackDestination(webhook_url=slack.webhook_url())
    async with httpx.AsyncClient(timeout=0.2) as impatient:
        provider = SlackProvider(impatient)
        with pytest.raises(TransientDeliveryError) as caught:
            await provider.send(provider.render(alert_message(), destination), destination)
    assert caught.value.reason == "timeout"
    # The slow answer still lands; wait so it is not counted in the next test.
    await slack.wait_for(1, endpoint="webhook")


async def test_connection_refused_is_transient(hook_only: SlackProvider) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    destination = SlackDestination(webhook_url=f"http://127.0.0.1:{port}/services/T1/B1/x")
    with pytest.raises(TransientDeliveryError) as caught:
        await hook_only.send(hook_only.render(alert_message(), destination), destination)
    assert caught.value.reason == "connection_error"


async def test_bot_mode_posts_then_edits_the_same_message(
    slack: FakeSlack, bot: SlackProvider
) -> None:
    destination = SlackDestination(channel="C0OWNER")
    first = alert_message(comment=None)
    receipt = await bot.send(bot.render(first, destination), destination)

    assert isinstance(receipt.ref, SlackRef)
    assert receipt.ref.channel == "C0OWNER"
    assert receipt.ref.ts is not None
    assert bot.can_edit(receipt.ref)
    message = slack.messages[("C0OWNER", receipt.ref.ts)]
    assert "_No comment_" in str(message.blocks)

    revised = alert_message(revision=1, comment="Arrived later <!here>")
    edit = await bot.edit(receipt.ref, bot.render(revised, destination))

    assert edit.edited
    assert edit.ref == receipt.ref
    assert len(slack.messages) == 1
    assert "Arrived later &lt;!here&gt;" in str(message.blocks)
    assert len(message.history) == 1
    [post, update] = slack.received()
    assert (post.endpoint, update.endpoint) == ("chat.postMessage", "chat.update")
    assert update.headers["authorization"] == f"Bearer {slack.bot_token}"


async def test_bot_mode_is_preferred_when_both_routes_exist(
    slack: FakeSlack, bot: SlackProvider
) -> None:
    destination = SlackDestination(channel="C0OWNER", webhook_url=slack.webhook_url())
    receipt = await bot.send(bot.render(alert_message(), destination), destination)
    assert receipt.ref.editable
    assert slack.webhook_posts == []


@pytest.mark.parametrize("code", ["channel_not_found", "is_archived", "msg_too_long"])
async def test_bot_mode_ok_false_errors_are_permanent(
    slack: FakeSlack, bot: SlackProvider, code: str
) -> None:
    slack.script(api_error(code), endpoint="chat.postMessage")
    destination = SlackDestination(channel="C0OWNER")
    with pytest.raises(PermanentDeliveryError) as caught:
        await bot.send(bot.render(alert_message(), destination), destination)
    assert caught.value.reason == code
    assert caught.value.vendor_status == 200
    assert not isinstance(caught.value, DestinationConfigError)


async def test_archived_channel_as_the_fake_reports_it(
    slack: FakeSlack, bot: SlackProvider
) -> None:
    destination = SlackDestination(channel="CARCHIVED")
    with pytest.raises(PermanentDeliveryError) as caught:
        await bot.send(bot.render(alert_message(), destination), destination)
    assert caught.value.reason == "is_archived"


async def test_unknown_channel_as_the_fake_reports_it(vendor_client: httpx.AsyncClient) -> None:
    async with FakeSlack(known_channels={"C0OWNER"}) as strict:
        provider = SlackProvider(
            vendor_client, api_url=strict.api_url, bot_token=SecretStr(strict.bot_token)
        )
        destination = SlackDestination(channel="C0GONE")
        with pytest.raises(PermanentDeliveryError) as caught:
            await provider.send(provider.render(alert_message(), destination), destination)
    assert caught.value.reason == "channel_not_found"


async def test_rejected_bot_token_is_a_config_error(
    slack: FakeSlack, vendor_client: httpx.AsyncClient
) -> None:
    wrong = SlackProvider(vendor_client, api_url=slack.api_url, bot_token=SecretStr("xoxb-wrong"))
    destination = SlackDestination(channel="C0OWNER")
    with pytest.raises(DestinationConfigError) as caught:
        await wrong.send(wrong.render(alert_message(), destination), destination)
    assert caught.value.reason == "invalid_auth"
    assert "xoxb-wrong" not in str(caught.value)


async def test_bot_mode_rate_limit_is_transient(slack: FakeSlack, bot: SlackProvider) -> None:
    slack.script(rate_limited(3, api=True), endpoint="chat.update")
    destination = SlackDestination(channel="C0OWNER")
    receipt = await bot.send(bot.render(alert_message(), destination), destination)
    with pytest.raises(TransientDeliveryError) as caught:
        await bot.edit(receipt.ref, bot.render(alert_message(revision=1), destination))
    assert caught.value.retry_after == 3


async def test_editing_a_missing_message_is_permanent(bot: SlackProvider) -> None:
    destination = SlackDestination(channel="C0OWNER")
    with pytest.raises(PermanentDeliveryError) as caught:
        await bot.edit(
            SlackRef(channel="C0OWNER", ts="1.999999"), bot.render(alert_message(), destination)
        )
    assert caught.value.reason == "message_not_found"


async def test_webhook_posts_cannot_be_edited(bot: SlackProvider) -> None:
    destination = SlackDestination(channel="C0OWNER")
    with pytest.raises(DestinationConfigError):
        await bot.edit(SlackRef(), bot.render(alert_message(), destination))


async def test_a_destination_without_a_usable_route_is_a_config_error(
    hook_only: SlackProvider,
) -> None:
    destination = SlackDestination(channel="C0OWNER")  # no bot token configured
    with pytest.raises(DestinationConfigError) as caught:
        await hook_only.send(hook_only.render(alert_message(), destination), destination)
    assert caught.value.reason == "no_slack_route"


async def test_arrival_times_are_recorded_for_the_benchmark(
    slack: FakeSlack, hook_only: SlackProvider
) -> None:
    destination = SlackDestination(webhook_url=slack.webhook_url())
    rendered = hook_only.render(alert_message(), destination)
    for _ in range(3):
        await hook_only.send(rendered, destination)
    arrivals = await slack.wait_for(3, endpoint="webhook")
    assert [item.status for item in arrivals] == [200, 200, 200]
    assert arrivals[0].received_at <= arrivals[1].received_at <= arrivals[2].received_at


async def test_the_fake_enforces_a_per_destination_rate_limit(
    vendor_client: httpx.AsyncClient,
) -> None:
    async with FakeSlack(min_interval=0.5) as limited:
        provider = SlackProvider(
            vendor_client, api_url=limited.api_url, bot_token=SecretStr(limited.bot_token)
        )
        hook = SlackDestination(webhook_url=limited.webhook_url())
        channel = SlackDestination(channel="C0OWNER")
        rendered = provider.render(alert_message(), hook)
        await provider.send(rendered, hook)
        await provider.send(rendered, channel)  # another destination: its own budget
        with pytest.raises(TransientDeliveryError) as caught:
            await provider.send(rendered, hook)
        assert caught.value.retry_after == 1
        assert limited.rate_limit is not None
        assert limited.rate_limit.refused == 1
