"""Outbound webhooks (CRMs and other tools): JSON signed per Standard Webhooks.

Idempotency: `webhook-id` is a UUIDv5 of (alert, revision, destination URL), identical on every
retry, so a receiver dedupes on it. The signature covers `<id>.<timestamp>.<body>` and is made at
send time (receivers reject timestamps older than five minutes, so a retry is signed afresh).
2xx is success; 408/429/5xx, timeouts and connection errors are transient; other answers are
permanent (redirects are not followed: a webhook URL that moved must be updated).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import orjson
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from npsloop_alerts.channels.base import (
    Channel,
    DestinationConfigError,
    MessageRef,
    SendReceipt,
    Stopwatch,
    WebhookRef,
    classify_http_status,
    post,
)
from npsloop_alerts.channels.message import AlertMessage, RenderedWebhook

EVENT_TYPE: Final = "npsloop.alert.notified"
PAYLOAD_VERSION: Final = 1
_WEBHOOK_ID_NAMESPACE: Final = uuid.UUID("0b8f3f0e-6a49-4f1e-9d0c-5b1d6f0c2a77")


@dataclass(frozen=True, slots=True)
class WebhookDestination:
    """An endpoint and its `whsec_…` signing secret (base64 after the prefix)."""

    url: str
    secret: SecretStr


def webhook_id(alert_id: str, revision: int, url: str) -> str:
    """`msg_<uuid5>`: the same for every attempt of one alert revision to one endpoint."""
    return "msg_" + uuid.uuid5(_WEBHOOK_ID_NAMESPACE, f"{alert_id}\x1f{revision}\x1f{url}").hex


def render_webhook(message: AlertMessage, destination: WebhookDestination) -> RenderedWebhook:
    """The JSON body (`type`, `timestamp`, `data`): raw values, JSON is the only encoding.

    Receivers that display the comment must escape it for their own medium.
    """
    body = {
        "type": EVENT_TYPE,
        "timestamp": message.submitted_at.isoformat(),
        "data": _data(message),
    }
    return RenderedWebhook(
        body=orjson.dumps(body, option=orjson.OPT_SORT_KEYS),
        webhook_id=webhook_id(message.alert_id, message.revision, destination.url),
        event_type=EVENT_TYPE,
    )


def _data(message: AlertMessage) -> dict[str, Any]:
    respondent = message.respondent.model_dump(mode="json") if message.respondent else None
    return {
        "version": PAYLOAD_VERSION,
        "alert_id": message.alert_id,
        "revision": message.revision,
        "bucket": message.bucket.value,
        "score": message.score,
        "comment": message.comment,
        "account": {
            "id": message.account_id,
            "name": message.account_name,
            "segment": message.account_segment,
        },
        "touchpoint": message.touchpoint,
        "kind": message.kind.value,
        "respondent": respondent,
        "submitted_at": message.submitted_at.isoformat(),
        "sla_deadline": message.sla_deadline.isoformat() if message.sla_deadline else None,
        "full_text_url": message.full_text_url,
        "actions": [{"kind": action.kind.value, "url": action.url} for action in message.actions],
    }


def signature_headers(
    rendered: RenderedWebhook, secret: SecretStr, now: datetime
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` for this body."""
    try:
        signer = Webhook(secret.get_secret_value())
    except Exception as exc:  # the library raises bare errors for bad base64 or empty secrets
        raise DestinationConfigError(
            "webhook secret is not a valid whsec_ secret", reason="invalid_secret"
        ) from exc
    signature = signer.sign(rendered.webhook_id, now, rendered.body.decode())
    return {
        "webhook-id": rendered.webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


class WebhookProvider:
    """`ChannelProvider[WebhookDestination, RenderedWebhook]`; `client` should not follow
    redirects (httpx's default)."""

    channel: Final = Channel.WEBHOOK

    def __init__(
        self, client: httpx.AsyncClient, *, user_agent: str = "npsloop-webhooks/1"
    ) -> None:
        self._client = client
        self._user_agent = user_agent

    def render(
        self, message: AlertMessage, destination: WebhookDestination, locale: str | None = None
    ) -> RenderedWebhook:
        return render_webhook(message, destination)

    async def send(self, rendered: RenderedWebhook, destination: WebhookDestination) -> SendReceipt:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self._user_agent,
            **signature_headers(rendered, destination.secret, datetime.now(UTC)),
        }
        watch = Stopwatch()
        response = await post(
            self._client, destination.url, content=rendered.body, headers=headers, vendor="Webhook"
        )
        if not 200 <= response.status_code < 300:
            raise classify_http_status(response, vendor="Webhook")
        return SendReceipt(
            channel=Channel.WEBHOOK,
            ref=WebhookRef(webhook_id=rendered.webhook_id),
            latency_ms=watch.elapsed_ms,
            vendor_status=response.status_code,
        )

    def can_edit(self, ref: MessageRef) -> bool:
        return False  # a new revision is a new event with its own webhook-id
