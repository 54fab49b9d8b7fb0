"""The local vendor servers themselves: accepted connections have Nagle's algorithm off, and the
bare ASGI layer under them answers like the framework it replaced.

With Nagle on, a small response on a keep-alive connection waits for the client's delayed ACK
(~40 ms a request), which would make every channel test and the benchmark measure the fake.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.fakes.server import Headers, LocalHttpServer, Response, Scripted
from tests.fakes.slack_api import DEFAULT_BOT_TOKEN, FakeSlack, rate_limited
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.fakes.webhook_receiver import FakeWebhookReceiver

REQUESTS = 5


def _slack_post(fake: LocalHttpServer, index: int) -> httpx.Request:
    assert isinstance(fake, FakeSlack)
    return httpx.Request("POST", fake.webhook_url(), json={"text": f"message {index}"})


def _telegram_post(fake: LocalHttpServer, index: int) -> httpx.Request:
    url = f"{fake.url}/bot{DEFAULT_TOKEN}/sendMessage"
    return httpx.Request("POST", url, json={"chat_id": "42", "text": f"message {index}"})


def _webhook_post(fake: LocalHttpServer, index: int) -> httpx.Request:
    assert isinstance(fake, FakeWebhookReceiver)
    msg_id, now = f"msg_{index}", datetime.now(UTC)
    body = orjson.dumps({"index": index}).decode()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(fake.secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }
    return httpx.Request("POST", fake.endpoint_url(), content=body, headers=headers)


FAKES: dict[
    str, tuple[Callable[[], LocalHttpServer], Callable[[LocalHttpServer, int], httpx.Request]]
]
FAKES = {
    "slack": (FakeSlack, _slack_post),
    "telegram": (FakeTelegram, _telegram_post),
    "webhook": (FakeWebhookReceiver, _webhook_post),
}


@pytest.mark.parametrize("name", sorted(FAKES))
async def test_keep_alive_connection_has_tcp_nodelay(name: str) -> None:
    make_fake, make_request = FAKES[name]
    async with make_fake() as fake, httpx.AsyncClient(timeout=5.0) as client:
        for index in range(REQUESTS):
            response = await client.send(make_request(fake, index))
            assert response.status_code == 200, response.text

        # All requests went over one kept-alive connection, still open on the server's side.
        [accepted] = fake.open_sockets()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert len(fake.received()) == REQUESTS


# -- the bare ASGI layer: what the vendors' clients see over real HTTP ----------------------------


async def test_scripted_429_carries_retry_after_and_content_types() -> None:
    async with FakeSlack() as fake, httpx.AsyncClient(timeout=5.0) as client:
        fake.script(rate_limited(7), rate_limited(3, api=True))
        hook = await client.post(fake.webhook_url(), json={"text": "hi"})
        api = await client.post(
            f"{fake.api_url}/chat.postMessage",
            json={"channel": "C1", "text": "hi"},
            headers={"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"},
        )
        ok = await client.post(fake.webhook_url(), json={"text": "hi"})

    assert (hook.status_code, hook.text) == (429, "rate_limited")
    assert hook.headers["retry-after"] == "7"
    assert hook.headers["content-type"] == "text/plain; charset=utf-8"
    assert hook.headers["content-length"] == str(len(b"rate_limited"))
    assert api.status_code == 429
    assert api.headers["Retry-After"] == "3"
    assert api.headers["content-type"] == "application/json"
    assert api.json() == {"ok": False, "error": "ratelimited"}
    assert (ok.status_code, ok.text) == (200, "ok")
    assert [item.status for item in fake.received()] == [429, 429, 200]


async def test_request_headers_are_case_insensitive_for_the_fakes_and_in_received() -> None:
    async with FakeSlack() as fake, httpx.AsyncClient(timeout=5.0) as client:
        answer = await client.post(
            f"{fake.api_url}/chat.postMessage",
            content=orjson.dumps({"channel": "C1", "text": "hi"}),
            headers={
                "AUTHORIZATION": f"Bearer {DEFAULT_BOT_TOKEN}",
                "Content-TYPE": "application/json",
                "X-Trace-Id": "abc",
            },
        )
    assert answer.json()["ok"] is True
    [request] = fake.received("chat.postMessage")
    assert request.headers["authorization"] == f"Bearer {DEFAULT_BOT_TOKEN}"
    assert request.headers["X-TRACE-ID"] == request.headers["x-trace-id"] == "abc"
    assert "Content-Type" in request.headers
    assert request.headers.get("x-missing", "none") == "none"
    assert dict(request.headers)["x-trace-id"] == "abc"  # names iterate lower-case


def test_headers_lookup_decoding_and_first_value_wins() -> None:
    raw = [(b"content-type", b"application/json"), (b"x-dup", b"first"), (b"x-dup", b"second")]
    headers = Headers.from_asgi(raw)
    assert headers["Content-Type"] == "application/json"
    assert headers.get("X-DUP") == "first"
    with pytest.raises(KeyError):
        headers["x-absent"]
    assert dict(headers) == {"content-type": "application/json", "x-dup": "first"}
    assert headers == {"content-type": "application/json", "x-dup": "first"}
    assert headers.get("x-dup") == "first"  # the same once decoded
    assert Headers({"Webhook-Id": "m1"})["webhook-id"] == "m1"


async def test_unknown_methods_get_405_and_are_not_recorded() -> None:
    async with FakeSlack() as fake, httpx.AsyncClient(timeout=5.0) as client:
        refused = await client.request("DELETE", fake.webhook_url())
        patched = await client.request("PATCH", f"{fake.api_url}/chat.update", json={})
        head = await client.head(fake.webhook_url())
        fetched = await client.get(fake.webhook_url())

    assert (refused.status_code, refused.text) == (405, "Method Not Allowed")
    assert refused.headers["allow"] == "GET, HEAD, POST, PUT"
    assert refused.headers["content-type"] == "text/plain; charset=utf-8"
    assert patched.status_code == 405
    # HEAD and GET reach the fake (a webhook without a payload is refused the Slack way).
    assert (head.status_code, head.content) == (400, b"")
    assert (fetched.status_code, fetched.text) == (400, "invalid_payload")
    assert [item.method for item in fake.received()] == ["HEAD", "GET"]


async def test_query_parameters_and_chunked_bodies_reach_the_fake() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"chat_id": "42", '
        yield b'"text": "in two chunks"}'

    async with FakeTelegram() as fake, httpx.AsyncClient(timeout=5.0) as client:
        by_query = await client.get(
            f"{fake.url}/bot{DEFAULT_TOKEN}/sendMessage", params={"chat_id": "7", "text": "hi"}
        )
        chunked = await client.post(
            f"{fake.url}/bot{DEFAULT_TOKEN}/sendMessage",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        wrong_token = await client.post(f"{fake.url}/bot1:nope/sendMessage", json={})

    assert by_query.status_code == 200, by_query.text
    assert by_query.json()["result"]["chat"]["id"] == 7
    assert chunked.status_code == 200, chunked.text
    assert chunked.json()["result"]["text"] == "in two chunks"
    assert fake.received("sendMessage")[1].body == b'{"chat_id": "42", "text": "in two chunks"}'
    assert wrong_token.status_code == 401
    assert wrong_token.headers["content-type"] == "application/json"
    assert wrong_token.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}


def test_response_helpers_and_wire_headers() -> None:
    answer = Response.json({"ok": True, "text": "olá"}, 201, {"Retry-After": "2"})
    assert answer.body == orjson.dumps({"ok": True, "text": "olá"})
    assert answer.raw_headers() == [
        (b"content-type", b"application/json"),
        (b"retry-after", b"2"),
        (b"content-length", b"%d" % len(answer.body)),
    ]
    own_type = Response.text("<p>", headers={"Content-Type": "text/html"})
    assert own_type.raw_headers() == [(b"content-type", b"text/html"), (b"content-length", b"3")]
    assert Response(204).raw_headers() == []
    assert Scripted(503, text="down").response() == Response.text("down", 503)
    assert Scripted(200, json=[1]).response() == Response.json([1])
