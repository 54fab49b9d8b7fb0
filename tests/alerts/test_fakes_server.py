"""The local vendor servers themselves: accepted connections have Nagle's algorithm off.

With Nagle on, a small response on a keep-alive connection waits for the client's delayed ACK
(~40 ms a request), which would make every channel test and the benchmark measure the fake.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from tests.fakes.server import LocalHttpServer
from tests.fakes.slack_api import FakeSlack
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
