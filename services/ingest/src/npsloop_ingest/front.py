"""The ASGI app uvicorn serves: `POST /v1/responses` handled directly, the rest by FastAPI.

FastAPI's routing and dependency machinery costs more per request than everything ingest itself
does (INFRA.md measures it at a quarter of a bare ASGI app's throughput), so the one hot endpoint
bypasses it. It is still documented by, and reachable through, the FastAPI app: that route calls
the same `ResponseIntake.handle`, so the documented and the fast path cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from npsloop_ingest.responses.intake import PATH, Receive, ResponseIntake

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class IngestFront:
    def __init__(self, intake: ResponseIntake, api: FastAPI) -> None:
        self.intake = intake
        self.api = api  # docs, health, metrics, lifespan — and the documented POST route

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            reply = await self.intake.handle(scope["headers"], receive)
            await send(
                {"type": "http.response.start", "status": reply.status, "headers": reply.headers}
            )
            await send({"type": "http.response.body", "body": reply.body})
            return
        await self.api(scope, receive, send)
