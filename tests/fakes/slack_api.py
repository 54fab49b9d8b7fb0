"""A local Slack: incoming webhooks and the Web API's `chat.postMessage` / `chat.update`.

Behaves like Slack where our adapter depends on it:
* webhooks at `/services/T…/B…/…` answer `200 ok`; a revoked hook answers `404 no_service`;
  bad JSON or Block Kit over its limits answers `400 invalid_payload` / `invalid_blocks`;
* Web API under `/api/` wants `Authorization: Bearer xoxb-…`; errors come as HTTP 200 with
  `{"ok": false, "error": …}` (`not_authed`, `invalid_auth`, `channel_not_found`, `is_archived`,
  `message_not_found`, `invalid_blocks`); success returns `channel` and `ts`;
* `script(...)` injects 429 + `Retry-After`, 5xx, slow answers, or any other reply;
  `min_interval=` refuses with 429 whatever comes faster than that per webhook or channel.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any, Final

from tests.fakes.server import LocalHttpServer, RateLimit, Request, Response, Scripted, parse_body

WEBHOOK_ENDPOINT: Final = "webhook"
DEFAULT_BOT_TOKEN: Final = "xoxb-1111-2222-test"
DEFAULT_HOOK_SECRET: Final = "x1"
_WEBHOOK_PATH: Final = re.compile(r"^/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+$")
# Mentions and broadcasts: what must never appear unescaped in text built from user input.
PING: Final = re.compile(r"<(?:!(?:channel|here|everyone|subteam\^)|@[UW])[^>]*>")


@dataclass(slots=True)
class SlackMessage:
    """A message as the channel shows it now, with earlier versions in `history`."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    history: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)


def rate_limited(retry_after: int, *, api: bool = False) -> Scripted:
    """What Slack sends when over the rate limit (HTTP 429 for both webhooks and the Web API)."""
    headers = {"Retry-After": str(retry_after)}
    if api:
        return Scripted(429, json={"ok": False, "error": "ratelimited"}, headers=headers)
    return Scripted(429, text="rate_limited", headers=headers)


def webhook_error(status: int, code: str) -> Scripted:
    return Scripted(status, text=code)


def api_error(code: str) -> Scripted:
    return Scripted(200, json={"ok": False, "error": code})


class FakeSlack(LocalHttpServer):
    def __init__(
        self,
        *,
        bot_token: str = DEFAULT_BOT_TOKEN,
        known_channels: set[str] | None = None,
        archived_channels: set[str] | None = None,
        min_interval: float | None = None,
    ) -> None:
        super().__init__()
        # Per webhook and per channel, like Slack's ~1 message/s (None: no limit).
        self.rate_limit = RateLimit(min_interval) if min_interval else None
        self.bot_token = bot_token
        self.known_channels = known_channels  # None: every channel exists
        self.archived_channels = archived_channels or set()
        self.revoked_webhooks: set[str] = set()
        self.webhook_posts: list[dict[str, Any]] = []
        self.messages: dict[tuple[str, str], SlackMessage] = {}
        self._ts_counter = itertools.count(1)

    def reset(self) -> None:
        super().reset()
        if self.rate_limit:
            self.rate_limit.reset()
        self.revoked_webhooks.clear()
        self.webhook_posts.clear()
        self.messages.clear()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def webhook_url(
        self, team: str = "T0001", bot: str = "B0001", secret: str = DEFAULT_HOOK_SECRET
    ) -> str:
        return f"{self.url}/services/{team}/{bot}/{secret}"

    def revoke(self, webhook_url: str) -> None:
        self.revoked_webhooks.add(webhook_url.removeprefix(self.url))

    def endpoint_of(self, path: str) -> str:
        if path.startswith("/api/"):
            return path.removeprefix("/api/")
        return WEBHOOK_ENDPOINT if path.startswith("/services/") else "unknown"

    async def answer(self, request: Request, body: bytes, endpoint: str) -> Response:
        if endpoint == WEBHOOK_ENDPOINT:
            return self._webhook(request.path, request, body)
        if endpoint in {"chat.postMessage", "chat.update"}:
            return self._web_api(endpoint, request, body)
        if request.path.startswith("/api/"):
            return Response.json({"ok": False, "error": "unknown_method"})
        return Response.text("Not Found", 404)

    # -- incoming webhooks -----------------------------------------------------------------

    def _webhook(self, path: str, request: Request, body: bytes) -> Response:
        if not _WEBHOOK_PATH.match(path) or path in self.revoked_webhooks:
            return Response.text("no_service", 404)
        payload = parse_body(request, body)
        if not payload.get("text") and not payload.get("blocks"):
            return Response.text("invalid_payload", 400)
        if block_kit_problems(payload):
            return Response.text("invalid_blocks", 400)
        wait = self.rate_limit.retry_after(path) if self.rate_limit else None
        if wait is not None:
            return rate_limited(wait).response()
        self.webhook_posts.append(payload)
        return Response.text("ok")

    # -- Web API ---------------------------------------------------------------------------

    def _web_api(self, method: str, request: Request, body: bytes) -> Response:
        authorization = request.headers.get("authorization", "")
        if not authorization:
            return Response.json({"ok": False, "error": "not_authed"})
        if authorization != f"Bearer {self.bot_token}":
            return Response.json({"ok": False, "error": "invalid_auth"})
        payload = parse_body(request, body)
        channel = str(payload.get("channel") or "")
        problem = self._channel_problem(channel) or _content_problem(payload)
        if problem:
            return Response.json({"ok": False, "error": problem})
        wait = self.rate_limit.retry_after(channel) if self.rate_limit else None
        if wait is not None:
            return rate_limited(wait, api=True).response()
        if method == "chat.postMessage":
            return self._post(channel, payload)
        return self._update(channel, payload)

    def _channel_problem(self, channel: str) -> str | None:
        if not channel or (self.known_channels is not None and channel not in self.known_channels):
            return "channel_not_found"
        if channel in self.archived_channels:
            return "is_archived"
        return None

    def _post(self, channel: str, payload: dict[str, Any]) -> Response:
        ts = f"{int(time.time())}.{next(self._ts_counter):06d}"
        message = SlackMessage(channel, ts, str(payload.get("text", "")), payload.get("blocks", []))
        self.messages[(channel, ts)] = message
        return Response.json(
            {"ok": True, "channel": channel, "ts": ts, "message": {"text": message.text}}
        )

    def _update(self, channel: str, payload: dict[str, Any]) -> Response:
        message = self.messages.get((channel, str(payload.get("ts", ""))))
        if message is None:
            return Response.json({"ok": False, "error": "message_not_found"})
        message.history.append((message.text, message.blocks))
        message.text = str(payload.get("text", ""))
        message.blocks = payload.get("blocks", [])
        return Response.json(
            {"ok": True, "channel": channel, "ts": message.ts, "text": message.text}
        )


def _content_problem(payload: dict[str, Any]) -> str | None:
    if not payload.get("text") and not payload.get("blocks"):
        return "no_text"
    if block_kit_problems(payload):
        return "invalid_blocks"
    return None


def block_kit_problems(payload: dict[str, Any]) -> list[str]:
    """Every Block Kit limit the message breaks (APIS.md), as readable strings."""
    problems: list[str] = []
    if len(str(payload.get("text", ""))) > 40_000:
        problems.append("text longer than 40000")
    blocks = payload.get("blocks") or []
    if not isinstance(blocks, list) or len(blocks) > 50:
        return [*problems, "blocks must be a list of at most 50"]
    for index, block in enumerate(blocks):
        problems += [f"block {index}: {problem}" for problem in _block_problems(block)]
    return problems


def _block_problems(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        return _too_long(block.get("text", {}).get("text", ""), 150, "header")
    if kind == "section":
        problems = _too_long(block.get("text", {}).get("text", ""), 3_000, "section text")
        fields = block.get("fields", [])
        if len(fields) > 10:
            problems.append("more than 10 fields")
        for item in fields:
            problems += _too_long(item.get("text", ""), 2_000, "field")
        return problems
    if kind == "actions":
        return [problem for element in block.get("elements", []) for problem in _button(element)]
    if kind == "context":
        return ["more than 10 context elements"] if len(block.get("elements", [])) > 10 else []
    return [f"unsupported block type {kind!r}"]


def _button(element: dict[str, Any]) -> list[str]:
    return [
        *_too_long(element.get("text", {}).get("text", ""), 75, "button text"),
        *_too_long(element.get("action_id", ""), 255, "action_id"),
        *_too_long(element.get("value", ""), 2_000, "button value"),
        *_too_long(element.get("url", ""), 3_000, "button url"),
    ]


def _too_long(text: str, limit: int, what: str) -> list[str]:
    return [f"{what} longer than {limit}"] if len(text) > limit else []


def pings(payload: dict[str, Any] | SlackMessage) -> list[str]:
    """Every mention/broadcast control sequence in the text and mrkdwn of a message."""
    if isinstance(payload, SlackMessage):
        payload = {"text": payload.text, "blocks": payload.blocks}
    return PING.findall(_all_text(payload))


def _all_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(_all_text(item) for item in value.values())
    if isinstance(value, list):
        return "\n".join(_all_text(item) for item in value)
    return ""
