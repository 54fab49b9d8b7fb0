"""The yardstick: an ASGI app that reads the body and answers 202 without doing any work.

`bench/ingest.py` runs it under the same uvicorn settings as ingest so the ratio between the two
says how much of the machine's HTTP capacity ingest's own work costs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ACCEPTED_BODY = b'{"accepted":1}'
ACCEPTED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ACCEPTED_BODY)).encode()),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:
        message = await receive()
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": ACCEPTED_HEADERS})
    await send({"type": "http.response.body", "body": ACCEPTED_BODY})
