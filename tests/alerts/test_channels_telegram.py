"""Telegram channel against the local Bot API (strict HTML entity parsing, real port)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from npsloop_alerts.channels import (
    DestinationConfigError,
    PermanentDeliveryError,
    TelegramDestination,
    TelegramProvider,
    TelegramRef,
    TransientDeliveryError,
)
from npsloop_alerts.channels.escaping import utf16_length
from npsloop_alerts.channels.telegram import render_telegram
from tests.fakes.samples import (
    ARABIC,
    CJK,
    FULL_TEXT_URL,
    HEBREW,
    HOSTILE_COMMENTS,
    LONG,
    TELEGRAM_MARKUP,
    alert_message,
)
from tests.fakes.server import Scripted
from tests.fakes.telegram_api import FakeTelegram, error, parse_html, too_many_requests

CHAT = TelegramDestination(chat_id="4242")


@pytest.fixture(scope="module")
async def telegram_server() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(blocked_chats={"666"}, known_chats={"4242", "-1001", "666"}) as fake:
        yield fake


@pytest.fixture
def telegram(telegram_server: FakeTelegram) -> FakeTelegram:
    telegram_server.reset()
    return telegram_server


@pytest.fixture
def provider(telegram: FakeTelegram, vendor_client: httpx.AsyncClient) -> TelegramProvider:
    return TelegramProvider(
        vendor_client, api_url=telegram.api_url, bot_token=SecretStr(telegram.token)
    )


async def test_send_uses_html_mode_without_link_previews(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    receipt = await provider.send(provider.render(alert_message(), CHAT), CHAT)

    assert isinstance(receipt.ref, TelegramRef)
    assert receipt.ref.chat_id == "4242"
    assert provider.can_edit(receipt.ref)
    [message] = telegram.chat("4242")
    assert message.link_preview_options == {"is_disabled": True}
    [request] = telegram.received("sendMessage")
    assert request.json()["parse_mode"] == "HTML"
    assert message.text.startswith("🔴 Detractor · 3/10\nAccount: Acme Retail (retail)\n")
    assert "SLA deadline: Mar 2, 2026, 2:30\u202fPM EST" in message.text
    assert "Respondent: Maria Souza · maria@example.com" in message.text
    assert "Checkout kept failing & support never answered." in message.text
    assert "<b>Account:</b>" in message.html


async def test_action_links_become_an_inline_keyboard(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    await provider.send(provider.render(alert_message(), CHAT), CHAT)
    [message] = telegram.chat("4242")
    assert message.reply_markup == {
        "inline_keyboard": [
            [
                {"text": "Acknowledge", "callback_data": "ack:a-1"},
                {"text": "Resolve", "url": "https://npsloop.test/a/a-1/resolve?sig=2"},
            ]
        ]
    }


async def test_no_actions_means_no_keyboard() -> None:
    assert render_telegram(alert_message(actions=())).reply_markup is None


@pytest.mark.parametrize("name", sorted(HOSTILE_COMMENTS))
async def test_hostile_comments_are_accepted_and_shown_literally(
    telegram: FakeTelegram, provider: TelegramProvider, name: str
) -> None:
    comment = HOSTILE_COMMENTS[name]
    message = alert_message(comment=comment, account_name='<a href="x">Acme</a> & Co')
    await provider.send(provider.render(message, CHAT), CHAT)

    [shown] = telegram.chat("4242")
    assert utf16_length(shown.text) <= 4_096
    assert 'Account: <a href="x">Acme</a> & Co (retail)' in shown.text
    if name != "long":
        assert comment in shown.text


async def test_telegram_markup_in_a_comment_is_text_not_formatting(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    await provider.send(provider.render(alert_message(comment=TELEGRAM_MARKUP), CHAT), CHAT)
    [shown] = telegram.chat("4242")
    assert TELEGRAM_MARKUP in shown.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in shown.html
    assert "&amp;amp;" in shown.html


async def test_rtl_and_cjk_arrive_intact(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    comment = f"{ARABIC}\n{HEBREW}\n{CJK}"
    await provider.send(provider.render(alert_message(comment=comment), CHAT), CHAT)
    [shown] = telegram.chat("4242")
    assert f"\n{comment}\n" in shown.text


async def test_long_comment_fits_4096_visible_characters_with_a_read_more_link(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    rendered = provider.render(alert_message(comment=LONG), CHAT)
    await provider.send(rendered, CHAT)

    [shown] = telegram.chat("4242")
    assert rendered.visible_length == utf16_length(shown.text)
    assert 4_000 < utf16_length(shown.text) <= 4_096
    assert "…\nRead the full comment\n" in shown.text
    assert f'<a href="{FULL_TEXT_URL.replace("&", "&amp;")}">Read the full comment</a>' in (
        shown.html
    )


async def test_long_astral_comment_is_measured_in_utf16_units(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    rendered = provider.render(alert_message(comment="😡" * 5_000), CHAT)
    await provider.send(rendered, CHAT)
    [shown] = telegram.chat("4242")
    assert utf16_length(shown.text) <= 4_096
    # About half as many code points as UTF-16 units: each emoji counts twice.
    assert 2_000 < len(shown.text) < 2_300


async def test_renders_never_exceed_the_limit_whatever_the_fields() -> None:
    message = alert_message(
        comment="<&>" * 4_000,
        account_name="&" * 512,
        touchpoint="<" * 128,
        respondent={"name": ">" * 256, "external_id": "&" * 128},
    )
    rendered = render_telegram(message, "zh-CN")
    assert rendered.visible_length <= 4_096
    assert utf16_length(parse_html(rendered.html)) == rendered.visible_length


async def test_edit_replaces_the_text_in_place(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    receipt = await provider.send(provider.render(alert_message(comment=None), CHAT), CHAT)
    revised = provider.render(alert_message(revision=1, comment="Added later"), CHAT)
    edit = await provider.edit(receipt.ref, revised)

    assert edit.edited
    assert not edit.unchanged
    [message] = telegram.chat("4242")
    assert "Added later" in message.text
    assert "No comment" in message.history[0]


async def test_edit_with_identical_content_is_success(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    rendered = provider.render(alert_message(), CHAT)
    receipt = await provider.send(rendered, CHAT)
    edit = await provider.edit(receipt.ref, rendered)
    assert edit.unchanged
    [request] = telegram.received("editMessageText")
    assert request.status == 400


async def test_editing_a_missing_message_is_permanent(provider: TelegramProvider) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.edit(
            TelegramRef(chat_id="4242", message_id=99_999), provider.render(alert_message(), CHAT)
        )
    assert caught.value.reason == "message_to_edit_not_found"


async def test_429_is_transient_with_parameters_retry_after(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    telegram.script(too_many_requests(5), endpoint="sendMessage")
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(provider.render(alert_message(), CHAT), CHAT)
    assert caught.value.retry_after == 5
    assert caught.value.vendor_status == 429


async def test_server_errors_are_transient(
    telegram: FakeTelegram, provider: TelegramProvider
) -> None:
    telegram.script(error(502, "Bad Gateway"), Scripted(500, text="<html>oops</html>"))
    for _ in range(2):
        with pytest.raises(TransientDeliveryError):
            await provider.send(provider.render(alert_message(), CHAT), CHAT)


async def test_unknown_chat_is_permanent(provider: TelegramProvider) -> None:
    unknown = TelegramDestination(chat_id="-100777")
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.send(provider.render(alert_message(), unknown), unknown)
    assert caught.value.reason == "chat_not_found"
    assert caught.value.vendor_status == 400


async def test_blocked_bot_is_permanent(provider: TelegramProvider) -> None:
    blocked = TelegramDestination(chat_id="666")
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.send(provider.render(alert_message(), blocked), blocked)
    assert caught.value.reason == "bot_was_blocked_by_the_user"
    assert caught.value.vendor_status == 403


async def test_rejected_token_is_a_config_error_that_does_not_leak_it(
    telegram: FakeTelegram, vendor_client: httpx.AsyncClient
) -> None:
    wrong = TelegramProvider(
        vendor_client, api_url=telegram.api_url, bot_token=SecretStr("1:wrong-secret")
    )
    with pytest.raises(DestinationConfigError) as caught:
        await wrong.send(wrong.render(alert_message(), CHAT), CHAT)
    assert caught.value.reason == "bot_token_rejected"
    assert "wrong-secret" not in str(caught.value)


async def test_connection_errors_are_transient_and_do_not_leak_the_token(
    vendor_client: httpx.AsyncClient,
) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    provider = TelegramProvider(
        vendor_client, api_url=f"http://127.0.0.1:{port}", bot_token=SecretStr("1:very-secret")
    )
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(provider.render(alert_message(), CHAT), CHAT)
    assert caught.value.reason == "connection_error"
    assert "very-secret" not in str(caught.value)


async def test_timeout_is_transient(telegram: FakeTelegram) -> None:
    telegram.script(Scripted.slow(1.0), endpoint="sendMessage")
    async with httpx.AsyncClient(timeout=0.2) as impatient:
        provider = TelegramProvider(
            impatient, api_url=telegram.api_url, bot_token=SecretStr(telegram.token)
        )
        with pytest.raises(TransientDeliveryError) as caught:
            await provider.send(provider.render(alert_message(), CHAT), CHAT)
    assert caught.value.reason == "timeout"
    await telegram.wait_for(1, endpoint="sendMessage")


async def test_invalid_chat_id_and_missing_token_are_config_errors(
    telegram: FakeTelegram, vendor_client: httpx.AsyncClient
) -> None:
    provider = TelegramProvider(
        vendor_client, api_url=telegram.api_url, bot_token=SecretStr(telegram.token)
    )
    broken = TelegramDestination(chat_id="not a chat")
    with pytest.raises(DestinationConfigError):
        await provider.send(provider.render(alert_message(), broken), broken)
    tokenless = TelegramProvider(vendor_client, api_url=telegram.api_url, bot_token=None)
    with pytest.raises(DestinationConfigError):
        await tokenless.send(tokenless.render(alert_message(), CHAT), CHAT)
    assert telegram.requests == []


@pytest.mark.parametrize(
    "text",
    ["a < b", "fish & chips", "<script>x</script>", "<b>unclosed", "1 > 0", "<b>x</i>"],
)
async def test_the_fake_rejects_unescaped_markup_like_telegram(
    telegram: FakeTelegram, vendor_client: httpx.AsyncClient, text: str
) -> None:
    response = await vendor_client.post(
        f"{telegram.api_url}/bot{telegram.token}/sendMessage",
        json={"chat_id": 4242, "text": text, "parse_mode": "HTML"},
    )
    assert response.status_code == 400
    assert response.json()["description"].startswith("Bad Request: can't parse entities")


async def test_the_fake_enforces_4096_characters_and_button_data_size(
    telegram: FakeTelegram, vendor_client: httpx.AsyncClient
) -> None:
    url = f"{telegram.api_url}/bot{telegram.token}/sendMessage"
    too_long = await vendor_client.post(url, json={"chat_id": 4242, "text": "x" * 4_097})
    assert too_long.json()["description"] == "Bad Request: message is too long"
    entities_do_not_count = await vendor_client.post(
        url, json={"chat_id": 4242, "text": "<b>" + "&amp;" * 4_096 + "</b>", "parse_mode": "HTML"}
    )
    assert entities_do_not_count.json()["ok"] is True
    keyboard = {"inline_keyboard": [[{"text": "Ack", "callback_data": "k" * 65}]]}
    fat_button = await vendor_client.post(
        url, json={"chat_id": 4242, "text": "x", "reply_markup": keyboard}
    )
    assert fat_button.json()["description"] == "Bad Request: BUTTON_DATA_INVALID"


async def test_the_fake_answers_callback_queries(
    telegram: FakeTelegram, vendor_client: httpx.AsyncClient
) -> None:
    response = await vendor_client.post(
        f"{telegram.api_url}/bot{telegram.token}/answerCallbackQuery",
        json={"callback_query_id": "cq-1", "text": "Acknowledged"},
    )
    assert response.json() == {"ok": True, "result": True}
    assert telegram.callback_answers == [{"callback_query_id": "cq-1", "text": "Acknowledged"}]


async def test_the_fake_enforces_a_per_chat_rate_limit(vendor_client: httpx.AsyncClient) -> None:
    async with FakeTelegram(min_interval=0.5) as limited:
        provider = TelegramProvider(
            vendor_client, api_url=limited.api_url, bot_token=SecretStr(limited.token)
        )
        rendered = provider.render(alert_message(), CHAT)
        await provider.send(rendered, CHAT)
        other = TelegramDestination(chat_id="-1001")
        await provider.send(rendered, other)
        with pytest.raises(TransientDeliveryError) as caught:
            await provider.send(rendered, CHAT)
        assert caught.value.retry_after == 1
        assert len(limited.chat("4242")) == 1
