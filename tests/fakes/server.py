"""A real HTTP server (uvicorn + Starlette) on a free local port, run as a task in the current
event loop, recording every request and answering from a script before its normal behaviour.

Subclasses implement `endpoint_of(path)` (a short name such as `chat.postMessage`) and
`answer(...)` (what the real API would say). Tests and the benchmark use:

* `script(*replies, endpoint=...)`: the next matching requests get these replies, in order;
* `received(endpoint)` / `wait_for(count, endpoint)`: what arrived, with arrival timestamps.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import socket
import time
from collections import deque
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@dataclass(frozen=True, slots=True)
class Scripted:
    """One scripted answer. `status=None` means: wait `delay` seconds, then answer normally
    (a slow server, for timeout tests)."""

    status: int | None = 200
    json: Any = None
    text: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def response(self) -> Response:
        assert self.status is not None
        if self.json is not None:
            return JSONResponse(self.json, status_code=self.status, headers=dict(self.headers))
        return PlainTextResponse(
            self.text or "", status_code=self.status, headers=dict(self.headers)
        )

    @classmethod
    def slow(cls, seconds: float) -> Scripted:
        return cls(status=None, delay=seconds)


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived. `received_at` is wall-clock (comparable across processes),
    `monotonic` is `time.perf_counter()` in this process."""

    method: str
    path: str
    endpoint: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float
    monotonic: float
    status: int

    def json(self) -> Any:
        return orjson.loads(self.body)


class RateLimit:
    """Strict spacing per key (a webhook, a channel, a chat): a request sooner than `interval`
    seconds after the last accepted one to the same key is refused. Real services allow short
    bursts; this is stricter on purpose, so a sender's own limiter is what keeps it under."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.refused = 0
        self._last: dict[str, float] = {}

    def retry_after(self, key: str) -> int | None:
        """Whole seconds to wait (at least 1) when refused; `None` when accepted."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self.refused += 1
            return max(1, math.ceil(self.interval - (now - last)))
        self._last[key] = now
        return None

    def reset(self) -> None:
        self.refused = 0
        self._last.clear()


class SocketOptions(Protocol):
    """What a transport's socket offers (asyncio's `TransportSocket`, uvloop's pseudo-socket)."""

    def getsockopt(self, level: int, option: int, /) -> int: ...


class _SignalFreeServer(uvicorn.Server):
    """uvicorn inside a test process must leave Ctrl-C and SIGTERM to the test runner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class LocalHttpServer(abc.ABC):
    """Base class: start with `async with Fake() as fake:` (or `await fake.start()`)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: deque[tuple[str | None, Scripted]] = deque()
        self._server: _SignalFreeServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._app = Starlette(
            routes=[Route("/{path:path}", self._dispatch, methods=["GET", "POST", "PUT"])]
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Self:
        # An explicit IPPROTO_TCP (not protocol 0) is what makes asyncio switch Nagle off on
        # accepted sockets (uvloop always does): with it on, a small response waits for the
        # client's delayed ACK, ~40 ms per request on a keep-alive connection.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self._port = listener.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            backlog=1024,
        )
        self._server = _SignalFreeServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[listener]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("fake server stopped while starting")
            await asyncio.sleep(0.005)
        return self

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the fake server is not started")
        return f"http://127.0.0.1:{self._port}"

    def open_sockets(self) -> list[SocketOptions]:
        """The sockets of the connections the server holds open right now (accepted side)."""
        if self._server is None:
            raise RuntimeError("the fake server is not started")
        sockets: list[SocketOptions] = []
        for connection in self._server.server_state.connections:
            transport = getattr(connection, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                sockets.append(sock)
        return sockets

    # -- scripting and inspection ----------------------------------------------------------

    def script(self, *replies: Scripted, endpoint: str | None = None) -> None:
        """The next requests to `endpoint` (any endpoint when `None`) get `replies`, in order."""
        self._script.extend((endpoint, reply) for reply in replies)

    def reset(self) -> None:
        """Forget what arrived and what was scripted (for a server shared by several tests)."""
        self.requests.clear()
        self._script.clear()

    def received(self, endpoint: str | None = None) -> list[Received]:
        return [item for item in self.requests if endpoint is None or item.endpoint == endpoint]

    async def wait_for(
        self, count: int, endpoint: str | None = None, within: float = 10.0
    ) -> list[Received]:
        """Wait until at least `count` requests to `endpoint` have been answered."""
        deadline = time.monotonic() + within
        while len(self.received(endpoint)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{type(self).__name__}: {len(self.received(endpoint))} of {count} "
                    f"requests to {endpoint or 'any endpoint'} after {within}s"
                )
            await asyncio.sleep(0.005)
        return self.received(endpoint)

    # -- request handling ------------------------------------------------------------------

    @abc.abstractmethod
    def endpoint_of(self, path: str) -> str:
        """The endpoint name a request path belongs to (what scripts and `received` key on)."""

    @abc.abstractmethod
    async def answer(self, request: Request, body: bytes, endpoint: str) -> Response:
        """The vendor's answer to one request that no script replaced."""

    def _next_scripted(self, endpoint: str) -> Scripted | None:
        for index, (wanted, reply) in enumerate(self._script):
            if wanted is None or wanted == endpoint:
                del self._script[index]
                return reply
        return None

    async def _dispatch(self, request: Request) -> Response:
        received_at, monotonic = time.time(), time.perf_counter()
        body = await request.body()
        endpoint = self.endpoint_of(request.url.path)
        scripted = self._next_scripted(endpoint)
        if scripted is not None and scripted.delay:
            await asyncio.sleep(scripted.delay)
        if scripted is not None and scripted.status is not None:
            response = scripted.response()
        else:
            response = await self.answer(request, body, endpoint)
        self.requests.append(
            Received(
                method=request.method,
                path=request.url.path,
                endpoint=endpoint,
                headers={key.lower(): value for key, value in request.headers.items()},
                body=body,
                received_at=received_at,
                monotonic=monotonic,
                status=response.status_code,
            )
        )
        return response


def parse_body(request: Request, body: bytes) -> dict[str, Any]:
    """JSON or form-encoded parameters, as the Slack and Telegram APIs both accept."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}
    fields: dict[str, Any] = dict(parse_qsl(body.decode(errors="replace")))
    for key in ("blocks", "reply_markup", "link_preview_options"):
        if isinstance(fields.get(key), str):
            with contextlib.suppress(orjson.JSONDecodeError):
                fields[key] = orjson.loads(fields[key])
    return {**dict(request.query_params), **fields}
