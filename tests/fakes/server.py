"""A real HTTP server (uvicorn, serving a bare ASGI callable) on a free local port, run as a task
in the current event loop, recording every request and answering from a script before its
normal behaviour.

No web framework in between: the benchmark drives these servers at hundreds of requests a
second on the same cores as the system under test, so a request costs one small `Request`
view, one `Response` and two ASGI messages.

Subclasses implement `endpoint_of(path)` (a short name such as `chat.postMessage`) and
`answer(...)` (what the real API would say, as a `Response`). Tests and the benchmark use:

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
from collections.abc import (
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Protocol, Self
from urllib.parse import parse_qsl

import orjson
import uvicorn

# The ASGI 3 shapes, as uvicorn calls the app.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE: Final = "application/json"
TEXT_TYPE: Final = "text/plain; charset=utf-8"
# What Starlette's `Route(..., methods=["GET", "POST", "PUT"])` accepted (HEAD comes with GET).
ALLOWED_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT"})


class Headers(Mapping[str, str]):
    """Request headers, looked up case-insensitively; where a name repeats, the first value
    counts. Built from the ASGI scope's raw pairs (names already lower-case, as ASGI requires):
    a lookup scans them, and they are decoded as a whole only when iterated."""

    __slots__ = ("_items", "_raw")

    _raw: Sequence[tuple[bytes, bytes]]
    _items: dict[str, str] | None

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._raw = ()
        self._items = {}
        for name, value in (items or {}).items():
            self._items.setdefault(name.lower(), value)

    @classmethod
    def from_asgi(cls, raw: Sequence[tuple[bytes, bytes]]) -> Headers:
        headers = cls.__new__(cls)
        headers._raw, headers._items = raw, None
        return headers

    def _decoded(self) -> dict[str, str]:
        items = self._items
        if items is None:
            items = self._items = {}
            for name, value in self._raw:
                items.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        return items

    def _find(self, name: str) -> str | None:
        if self._items is not None:
            return self._items.get(name.lower())
        wanted = name.lower().encode("latin-1")
        for raw_name, value in self._raw:
            if raw_name == wanted:
                return value.decode("latin-1")
        return None

    def __getitem__(self, name: str) -> str:
        value = self._find(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = self._find(name)
        return default if value is None else value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"Headers({self._decoded()!r})"


class Request:
    """What a subclass's `answer()` sees of one request (the body comes separately)."""

    __slots__ = ("headers", "method", "path", "query_string")

    def __init__(self, method: str, path: str, headers: Headers, query_string: bytes = b"") -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.query_string = query_string

    @property
    def query_params(self) -> dict[str, str]:
        """The query string's parameters (the last value where a name repeats)."""
        if not self.query_string:
            return {}
        return dict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class Response:
    """One answer: status, body and headers (content-length is added when sent, unless given
    or the status has no body)."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return cls(status, orjson.dumps(data), _with_type(JSON_TYPE, headers))

    @classmethod
    def text(
        cls, text: str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return cls(status, text.encode(), _with_type(TEXT_TYPE, headers))

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as sent (names lower-case), with content-length where it belongs."""
        raw: list[tuple[bytes, bytes]] = []
        sized = self.status < 200 or self.status in (204, 304)
        for name, value in self.headers.items():
            key = name.lower().encode("latin-1")
            sized = sized or key == b"content-length"
            raw.append((key, value.encode("latin-1")))
        if not sized:
            raw.append((b"content-length", b"%d" % len(self.body)))
        return raw

    async def send(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self.raw_headers()}
        )
        await send({"type": "http.response.body", "body": self.body})


def _with_type(content_type: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    """`content-type` first, unless `headers` names one of its own (in any case)."""
    if not headers:
        return {"content-type": content_type}
    if any(name.lower() == "content-type" for name in headers):
        return dict(headers)
    return {"content-type": content_type, **headers}


_METHOD_NOT_ALLOWED: Final = Response.text(
    "Method Not Allowed", 405, {"Allow": ", ".join(sorted(ALLOWED_METHODS))}
)


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
            return Response.json(self.json, self.status, self.headers)
        return Response.text(self.text or "", self.status, self.headers)

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
    headers: Mapping[str, str]  # case-insensitive
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
            self._asgi,
            interface="asgi3",
            proxy_headers=False,  # nothing here reads the client address; saves a wrapper per call
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

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The whole app: record, consult the script, answer (lifespan is off; no websockets)."""
        if scope["type"] != "http":
            return
        received_at, monotonic = time.time(), time.perf_counter()
        method: str = scope["method"]
        if method not in ALLOWED_METHODS:
            await _METHOD_NOT_ALLOWED.send(send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before sending all of it
        path: str = scope["path"]
        request = Request(method, path, Headers.from_asgi(scope["headers"]), scope["query_string"])
        endpoint = self.endpoint_of(path)
        scripted = self._next_scripted(endpoint) if self._script else None
        if scripted is not None and scripted.delay:
            await asyncio.sleep(scripted.delay)
        if scripted is not None and scripted.status is not None:
            response = scripted.response()
        else:
            response = await self.answer(request, body, endpoint)
        self.requests.append(
            Received(
                method=method,
                path=path,
                endpoint=endpoint,
                headers=request.headers,
                body=body,
                received_at=received_at,
                monotonic=monotonic,
                status=response.status,
            )
        )
        await response.send(send)


async def _read_body(receive: Receive) -> bytes | None:
    """The request body; `None` when the client disconnected first."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


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
    return {**request.query_params, **fields}
