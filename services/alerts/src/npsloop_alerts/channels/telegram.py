"""Telegram alerts: `sendMessage` / `editMessageText` in HTML parse mode.

Every untrusted string becomes a text node with `& < >` as entities (`"` too in attributes), so
`<b>x</b>` in a comment shows literally and bad markup can never fail the whole send. The 4,096
limit counts the text *after* entity parsing in UTF-16 code units; the renderer counts exactly
that and cuts only the raw comment, so no tag or entity is ever split. A later revision edits
the message (`chat_id` + `message_id` from the receipt); "message is not modified" is success.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import orjson
from pydantic import SecretStr

from npsloop_alerts.channels.base import (
    Channel,
    DeliveryError,
    DestinationConfigError,
    MessageRef,
    PermanentDeliveryError,
    SendReceipt,
    Stopwatch,
    TelegramRef,
    TransientDeliveryError,
    VendorAnswer,
    post,
    retry_after_header,
)
from npsloop_alerts.channels.escaping import (
    telegram_attribute,
    telegram_html,
    truncate,
    utf16_length,
)
from npsloop_alerts.channels.message import AlertMessage, RenderedTelegram
from npsloop_alerts.channels.presentation import AlertPresentation, present

DEFAULT_API_URL: Final = "https://api.telegram.org"
MESSAGE_LIMIT: Final = 4_096
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
_NUMERIC_CHAT: Final = re.compile(r"^-?\d+$")
_NOT_MODIFIED: Final = "message is not modified"


@dataclass(frozen=True, slots=True)
class TelegramDestination:
    """A numeric chat id (private chats, groups: `-100…`) or a public `@channelusername`."""

    chat_id: str


@dataclass(slots=True)
class _HtmlBuilder:
    """HTML parse-mode text built from escaped pieces, counting what Telegram will count."""

    parts: list[str] = field(default_factory=list)
    visible: int = 0

    def text(self, raw: str) -> None:
        self.parts.append(telegram_html(raw))
        self.visible += utf16_length(raw)

    def tagged(self, tag: str, raw: str) -> None:
        self.parts.append(f"<{tag}>{telegram_html(raw)}</{tag}>")
        self.visible += utf16_length(raw)

    def link(self, url: str, label: str) -> None:
        self.parts.append(f'<a href="{telegram_attribute(url)}">{telegram_html(label)}</a>')
        self.visible += utf16_length(label)

    def fact(self, label: str, value: str) -> None:
        self.tagged("b", f"{label}:")
        self.text(f" {value}\n")

    def extend(self, other: _HtmlBuilder) -> None:
        self.parts.extend(other.parts)
        self.visible += other.visible

    @property
    def html(self) -> str:
        return "".join(self.parts)


def render_telegram(message: AlertMessage, locale: str | None = None) -> RenderedTelegram:
    """The message and its inline keyboard; at most 4,096 visible characters."""
    presentation = present(message, locale)
    head = _facts(presentation)
    tail = _HtmlBuilder()
    tail.text("\n")
    tail.tagged("i", presentation.reference)
    body = _HtmlBuilder()
    body.extend(head)
    body.extend(_comment(presentation, MESSAGE_LIMIT - head.visible - tail.visible))
    body.extend(tail)
    return RenderedTelegram(
        html=body.html, visible_length=body.visible, reply_markup=_keyboard(presentation)
    )


def _facts(presentation: AlertPresentation) -> _HtmlBuilder:
    labels = presentation.labels
    builder = _HtmlBuilder()
    builder.tagged("b", f"{presentation.emoji} {presentation.title}")
    builder.text("\n")
    builder.fact(labels.account, presentation.account)
    builder.fact(labels.touchpoint, presentation.touchpoint)
    if presentation.respondent:
        builder.fact(labels.respondent, presentation.respondent)
    builder.fact(labels.deadline, presentation.deadline)
    builder.fact(labels.submitted, presentation.submitted)
    builder.text("\n")
    return builder


def _comment(presentation: AlertPresentation, budget: int) -> _HtmlBuilder:
    builder = _HtmlBuilder()
    if presentation.comment is None:
        builder.tagged("i", presentation.labels.no_comment)
        builder.text("\n")
        return builder
    read_more = _HtmlBuilder()
    if presentation.full_text_url:
        read_more.link(presentation.full_text_url, presentation.labels.read_more)
        read_more.text("\n")
    # One newline after the quote either way; the link only when the comment is cut.
    comment, truncated = truncate(presentation.comment, budget - 1, measure=utf16_length)
    if truncated and read_more.visible:
        comment, _ = truncate(
            presentation.comment, budget - 1 - read_more.visible, measure=utf16_length
        )
    builder.tagged("blockquote", comment)
    builder.text("\n")
    if truncated:
        builder.extend(read_more)
    return builder


def _keyboard(presentation: AlertPresentation) -> dict[str, Any] | None:
    if not presentation.actions:
        return None
    row: list[dict[str, str]] = []
    for action in presentation.actions:
        if action.link.callback_key:
            row.append({"text": action.label, "callback_data": action.link.callback_key})
        else:
            row.append({"text": action.label, "url": action.link.url})
    return {"inline_keyboard": [row]}


class TelegramProvider:
    """`EditingChannelProvider[TelegramDestination, RenderedTelegram]`.

    The bot token is part of every URL, so no URL or httpx message is ever put in an error.
    """

    channel: Final = Channel.TELEGRAM

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        bot_token: SecretStr | None,
        api_url: str = DEFAULT_API_URL,
    ) -> None:
        self._client = client
        self._api_url = api_url.rstrip("/")
        self._bot_token = bot_token

    def render(
        self, message: AlertMessage, destination: TelegramDestination, locale: str | None = None
    ) -> RenderedTelegram:
        return render_telegram(message, locale)

    async def send(
        self, rendered: RenderedTelegram, destination: TelegramDestination
    ) -> SendReceipt:
        payload = _message_payload(rendered, _chat_id(destination.chat_id))
        watch = Stopwatch()
        result = await self._call("sendMessage", payload)
        assert isinstance(result, dict)
        chat = result.get("chat") or {}
        return SendReceipt(
            channel=Channel.TELEGRAM,
            ref=TelegramRef(
                chat_id=str(chat.get("id", destination.chat_id)),
                message_id=int(result["message_id"]),
            ),
            latency_ms=watch.elapsed_ms,
            vendor_status=200,
        )

    def can_edit(self, ref: MessageRef) -> bool:
        return isinstance(ref, TelegramRef) and self._bot_token is not None

    async def edit(self, ref: MessageRef, rendered: RenderedTelegram) -> SendReceipt:
        if not isinstance(ref, TelegramRef):
            raise DestinationConfigError("not a Telegram message", reason="not_editable")
        payload = _message_payload(rendered, _chat_id(ref.chat_id))
        payload["message_id"] = ref.message_id
        watch = Stopwatch()
        try:
            await self._call("editMessageText", payload)
        except PermanentDeliveryError as exc:
            if exc.reason != "message_is_not_modified":
                raise
            return SendReceipt(
                channel=Channel.TELEGRAM,
                ref=ref,
                latency_ms=watch.elapsed_ms,
                vendor_status=400,
                edited=True,
                unchanged=True,
            )
        return SendReceipt(
            channel=Channel.TELEGRAM,
            ref=ref,
            latency_ms=watch.elapsed_ms,
            vendor_status=200,
            edited=True,
        )

    async def _call(self, method: str, payload: dict[str, Any]) -> Any:
        if self._bot_token is None:
            raise DestinationConfigError("no Telegram bot token configured", reason="no_bot_token")
        url = f"{self._api_url}/bot{self._bot_token.get_secret_value()}/{method}"
        response = await post(
            self._client,
            url,
            content=orjson.dumps(payload),
            headers=_JSON_HEADERS,
            vendor=f"Telegram {method}",
        )
        return _result(response, method)


def _chat_id(chat_id: str) -> int | str:
    chat_id = chat_id.strip()
    if _NUMERIC_CHAT.match(chat_id):
        return int(chat_id)
    if chat_id.startswith("@") and len(chat_id) > 1:
        return chat_id
    raise DestinationConfigError("Telegram chat id is not valid", reason="invalid_chat_id")


def _message_payload(rendered: RenderedTelegram, chat_id: int | str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "chat_id": chat_id,
        "text": rendered.html,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": True},
    }
    if rendered.reply_markup is not None:
        payload["reply_markup"] = rendered.reply_markup
    return payload


def _result(response: VendorAnswer, method: str) -> Any:
    """`result` of an `ok` answer; anything else raised as a delivery error."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise _error(response.status_code, "", {}, response, method)
    if answer.get("ok") is True:
        return answer.get("result")
    parameters = answer.get("parameters")
    code = answer.get("error_code")
    raise _error(
        code if isinstance(code, int) else response.status_code,
        str(answer.get("description") or ""),
        parameters if isinstance(parameters, dict) else {},
        response,
        method,
    )


def _error(
    code: int,
    description: str,
    parameters: dict[str, Any],
    response: VendorAnswer,
    method: str,
) -> DeliveryError:
    """Telegram's verdict as our error: 429/5xx transient, 401/404 our token, else permanent."""
    reason = _reason(description) or f"http_{code}"
    detail = f"Telegram {method} failed: {code} {description[:200]}".rstrip()
    if code == 429 or code >= 500:
        hint = parameters.get("retry_after")
        retry_after = float(hint) if isinstance(hint, int | float) else None
        return TransientDeliveryError(
            detail,
            reason="too_many_requests" if code == 429 else reason,
            retry_after=retry_after
            if retry_after is not None
            else retry_after_header(response.headers),
            vendor_status=code,
        )
    if code in {401, 404}:
        # Wrong or revoked bot token: every chat would fail the same way.
        return DestinationConfigError(detail, reason="bot_token_rejected", vendor_status=code)
    if "migrate_to_chat_id" in parameters:
        return PermanentDeliveryError(
            f"{detail}; the group is now chat {parameters['migrate_to_chat_id']}",
            reason="chat_migrated",
            vendor_status=code,
        )
    return PermanentDeliveryError(detail, reason=reason, vendor_status=code)


def _reason(description: str) -> str:
    """`Bad Request: chat not found` → `chat_not_found`; `Forbidden: bot was blocked by the
    user` → `bot_was_blocked_by_the_user`."""
    text = description.partition(":")[2] if ":" in description else description
    text = text.split(":")[0]
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:64]
