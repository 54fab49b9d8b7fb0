"""Slack alerts: an incoming webhook, or a bot token with `chat.postMessage` / `chat.update`.

One rendered value (Block Kit `blocks` + fallback `text`, already escaped for mrkdwn) serves both
modes. Bot mode returns `channel` + `ts` so a later revision edits the message in place; webhook
posts cannot be edited. Error mapping (APIS.md): 429 → transient with `Retry-After`; 5xx,
timeouts, connection errors → transient; webhook 404/410/`no_service`, bot-mode `ok: false`
errors (`channel_not_found`, `is_archived`, …) → permanent; our token rejected → config error.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    SlackRef,
    Stopwatch,
    TransientDeliveryError,
    VendorAnswer,
    classify_http_status,
    post,
    retry_after_header,
)
from npsloop_alerts.channels.escaping import slack_link, slack_mrkdwn, truncate, truncate_escaped
from npsloop_alerts.channels.message import AlertMessage, RenderedSlack
from npsloop_alerts.channels.presentation import AlertPresentation, present

DEFAULT_API_URL: Final = "https://slack.com/api"
HEADER_CHARS: Final = 150
SECTION_CHARS: Final = 3_000
FIELD_CHARS: Final = 2_000
BUTTON_TEXT_CHARS: Final = 75
FALLBACK_COMMENT_CHARS: Final = 300
_JSON_HEADERS: Final = {"Content-Type": "application/json; charset=utf-8"}
_TRANSIENT_API_ERRORS: Final = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
# Errors that mean our bot token or app setup is wrong, not the destination.
_CONFIG_API_ERRORS: Final = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
    }
)


@dataclass(frozen=True, slots=True)
class SlackDestination:
    """A channel/user id for bot mode (`C…`, `D…`, `U…`) and/or an incoming-webhook URL.

    With a bot token configured and a `channel`, bot mode is used (editable); otherwise the
    webhook.
    """

    channel: str | None = None
    webhook_url: str | None = None


def render_slack(message: AlertMessage, locale: str | None = None) -> RenderedSlack:
    """Block Kit: header, facts as section fields, the comment, context, action buttons."""
    presentation = present(message, locale)
    blocks: list[dict[str, Any]] = [
        _header(presentation),
        _facts(presentation),
        _comment_section(presentation),
        _context(presentation),
    ]
    if presentation.actions:
        blocks.append(_buttons(message, presentation))
    return RenderedSlack(text=_fallback_text(presentation), blocks=blocks)


def _header(presentation: AlertPresentation) -> dict[str, Any]:
    # Only our own words here: plain_text cannot carry escaped user text (entities would show
    # literally), so the account name stays in the mrkdwn fields where it is escaped.
    text = truncate(f"{presentation.emoji} {presentation.title}", HEADER_CHARS)[0]
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def _facts(presentation: AlertPresentation) -> dict[str, Any]:
    labels = presentation.labels
    facts = [
        (labels.account, presentation.account),
        (labels.score, presentation.title),
        (labels.touchpoint, presentation.touchpoint),
        (labels.deadline, presentation.deadline),
    ]
    if presentation.respondent:
        facts.append((labels.respondent, presentation.respondent))
    return {"type": "section", "fields": [_field(label, value) for label, value in facts]}


def _field(label: str, value: str) -> dict[str, Any]:
    heading = f"*{slack_mrkdwn(label)}*\n"
    body, _ = truncate_escaped(value, FIELD_CHARS - len(heading), slack_mrkdwn)
    return {"type": "mrkdwn", "text": heading + body, "verbatim": True}


def _comment_section(presentation: AlertPresentation) -> dict[str, Any]:
    labels = presentation.labels
    heading = f"*{slack_mrkdwn(labels.comment)}*\n"
    if presentation.comment is None:
        text = heading + f"_{slack_mrkdwn(labels.no_comment)}_"
    else:
        text = heading + _comment_body(presentation, SECTION_CHARS - len(heading))
    # verbatim: Slack does not auto-link #channel names, @names or URLs in the respondent's text.
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


def _comment_body(presentation: AlertPresentation, limit: int) -> str:
    assert presentation.comment is not None
    comment = slack_mrkdwn(presentation.comment)
    if len(comment) <= limit:
        return comment
    link = (
        "\n" + slack_link(presentation.full_text_url, presentation.labels.read_more)
        if presentation.full_text_url
        else ""
    )
    body, _ = truncate_escaped(presentation.comment, limit - len(link), slack_mrkdwn)
    return body + link


def _context(presentation: AlertPresentation) -> dict[str, Any]:
    text = (
        f"{slack_mrkdwn(presentation.labels.submitted)}: {slack_mrkdwn(presentation.submitted)}"
        f" · {slack_mrkdwn(presentation.reference)}"
    )
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text, "verbatim": True}]}


def _buttons(message: AlertMessage, presentation: AlertPresentation) -> dict[str, Any]:
    elements = []
    for action in presentation.actions:
        button: dict[str, Any] = {
            "type": "button",
            "text": {
                "type": "plain_text",
                "text": truncate(action.label, BUTTON_TEXT_CHARS)[0],
                "emoji": True,
            },
            "action_id": f"npsloop.{action.link.kind.value}",
            "value": action.link.callback_key or message.alert_id,
            "url": action.link.url,
        }
        if action.link.kind.value == "resolve":
            button["style"] = "primary"
        elements.append(button)
    return {"type": "actions", "block_id": f"alert.{message.alert_id}", "elements": elements}


def _fallback_text(presentation: AlertPresentation) -> str:
    """What notifications and screen readers show; the same escaping as the blocks."""
    summary = f"{presentation.emoji} {presentation.title} — {presentation.account}"
    if presentation.comment is None:
        return slack_mrkdwn(summary)
    excerpt, _ = truncate(" ".join(presentation.comment.split()), FALLBACK_COMMENT_CHARS)
    return slack_mrkdwn(f"{summary}: {excerpt}")


class SlackProvider:
    """`EditingChannelProvider[SlackDestination, RenderedSlack]`.

    `client` is shared and owned by the composition root (its timeout applies to every call).
    """

    channel: Final = Channel.SLACK

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str = DEFAULT_API_URL,
        bot_token: SecretStr | None = None,
    ) -> None:
        self._client = client
        self._api_url = api_url.rstrip("/")
        self._bot_token = bot_token

    def render(
        self, message: AlertMessage, destination: SlackDestination, locale: str | None = None
    ) -> RenderedSlack:
        return render_slack(message, locale)

    async def send(self, rendered: RenderedSlack, destination: SlackDestination) -> SendReceipt:
        if destination.channel and self._bot_token is not None:
            return await self._call_api("chat.postMessage", destination.channel, None, rendered)
        if destination.webhook_url:
            return await self._post_webhook(destination.webhook_url, rendered)
        raise DestinationConfigError(
            "Slack destination needs a webhook URL, or a channel and a bot token",
            reason="no_slack_route",
        )

    def can_edit(self, ref: MessageRef) -> bool:
        return isinstance(ref, SlackRef) and ref.editable and self._bot_token is not None

    async def edit(self, ref: MessageRef, rendered: RenderedSlack) -> SendReceipt:
        if not isinstance(ref, SlackRef) or ref.channel is None or ref.ts is None:
            raise DestinationConfigError(
                "only bot-mode Slack messages can be edited", reason="not_editable"
            )
        if self._bot_token is None:
            raise DestinationConfigError("no Slack bot token configured", reason="no_bot_token")
        return await self._call_api("chat.update", ref.channel, ref.ts, rendered)

    async def _post_webhook(self, url: str, rendered: RenderedSlack) -> SendReceipt:
        body = orjson.dumps({"text": rendered.text, "blocks": rendered.blocks})
        watch = Stopwatch()
        response = await post(
            self._client, url, content=body, headers=_JSON_HEADERS, vendor="Slack webhook"
        )
        if response.status_code == 200 and response.text.strip() == "ok":
            return SendReceipt(
                channel=Channel.SLACK,
                ref=SlackRef(),
                latency_ms=watch.elapsed_ms,
                vendor_status=200,
            )
        raise _webhook_error(response)

    async def _call_api(
        self, method: str, channel: str, ts: str | None, rendered: RenderedSlack
    ) -> SendReceipt:
        assert self._bot_token is not None
        payload: dict[str, Any] = {
            "channel": channel,
            "text": rendered.text,
            "blocks": rendered.blocks,
        }
        if ts is not None:
            payload["ts"] = ts
        headers = {**_JSON_HEADERS, "Authorization": f"Bearer {self._bot_token.get_secret_value()}"}
        watch = Stopwatch()
        response = await post(
            self._client,
            f"{self._api_url}/{method}",
            content=orjson.dumps(payload),
            headers=headers,
            vendor=f"Slack {method}",
        )
        answer = _api_answer(response, method)
        return SendReceipt(
            channel=Channel.SLACK,
            ref=SlackRef(channel=str(answer.get("channel", channel)), ts=str(answer["ts"])),
            latency_ms=watch.elapsed_ms,
            vendor_status=response.status_code,
            edited=ts is not None,
        )


def _webhook_error(response: VendorAnswer) -> DeliveryError:
    code = response.text.strip()[:64] or None
    if response.status_code == 200:
        # A 200 that is not "ok" is not a documented answer; do not call it delivered.
        return TransientDeliveryError(
            "Slack webhook answered 200 without ok", reason="unexpected_answer", vendor_status=200
        )
    reason = code if code and code.replace("_", "").isalnum() else None
    if reason == "no_service":
        return PermanentDeliveryError(
            "Slack webhook was revoked", reason="no_service", vendor_status=response.status_code
        )
    return classify_http_status(response, vendor="Slack webhook", reason=reason)


def _api_answer(response: VendorAnswer, method: str) -> dict[str, Any]:
    """The JSON of a successful Web API call; every failure raised as a delivery error."""
    if response.status_code != 200:
        raise classify_http_status(response, vendor=f"Slack {method}")
    try:
        answer = response.json()
    except ValueError as exc:
        raise TransientDeliveryError(
            f"Slack {method} answered non-JSON", reason="unexpected_answer", vendor_status=200
        ) from exc
    if not isinstance(answer, dict):
        raise TransientDeliveryError(
            f"Slack {method} answered unexpected JSON",
            reason="unexpected_answer",
            vendor_status=200,
        )
    if answer.get("ok") is True and "ts" in answer:
        return answer
    raise _api_error(str(answer.get("error") or "unknown_error"), method, response)


def _api_error(error: str, method: str, response: VendorAnswer) -> DeliveryError:
    detail = f"Slack {method} failed: {error}"
    if error in _TRANSIENT_API_ERRORS:
        return TransientDeliveryError(
            detail,
            reason=error,
            retry_after=retry_after_header(response.headers),
            vendor_status=200,
        )
    if error in _CONFIG_API_ERRORS:
        return DestinationConfigError(detail, reason=error, vendor_status=200)
    return PermanentDeliveryError(detail, reason=error, vendor_status=200)
