"""A lean HTTP/1.1 transport for httpx: keep-alive connections on asyncio protocols, responses
parsed by `httptools` (the parser uvicorn uses).

Why: at a thousand sends a second the stock transport (httpcore over anyio) costs several times
more CPU per request than the send itself; this one keeps httpx's client API (what the channel
providers use, including content decoding and its exception types) and replaces only the wire.

What it does not do: proxies, HTTP/2, `Expect: 100-continue`, streaming request bodies larger
than memory. `NPSLOOP_DELIVERY_HTTP_TRANSPORT=httpx` switches back to the stock transport.

Failures raise httpx's own exceptions, so callers map them as before: connecting
(`ConnectError`, `ConnectTimeout`), waiting for the answer (`ReadTimeout`), a connection that
broke or answered nonsense (`ReadError`, `RemoteProtocolError`). A failed request's connection
is closed, never reused; a request is never re-sent by the transport.
"""

from __future__ import annotations

import asyncio
import codecs
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import certifi
import httptools
import httpx
import orjson
from httpx._client import UseClientDefault
from httpx._types import (
    CookieTypes,
    HeaderTypes,
    QueryParamTypes,
    RequestContent,
    RequestData,
    RequestExtensions,
    RequestFiles,
    TimeoutTypes,
)

# Servers close idle keep-alive connections (uvicorn after 5 s, many others after 60 s); a
# connection idle longer than this is closed instead of risking a write into a closing socket.
IDLE_EXPIRY_SECONDS: Final = 4.0
READ_CHUNK_LIMIT: Final = 16 * 1024 * 1024
URL_CACHE_SIZE: Final = 1024  # parsed request URLs kept (vendor endpoints, webhook URLs)

_LENGTH_HEADERS: Final = frozenset({"content-length", "transfer-encoding"})

Origin = tuple[str, str, int]


class _ResponseProtocol(asyncio.Protocol):
    """One connection; collects one response at a time."""

    def __init__(self) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses; write/close/is_closing are
        # what is used.
        self.transport: Any = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._complete = False
        self._keep_alive = False

    # asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._complete:
            self._fail(httpx.ReadError("the server closed the connection"))

    # httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > READ_CHUNK_LIMIT:
            self._fail(httpx.RemoteProtocolError("response body too large"))
            return
        self._body.append(body)

    def on_headers_complete(self) -> None:
        # Only valid inside a callback: the parser resets its state once the message is done.
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._complete = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # exchange ---------------------------------------------------------------------------

    async def exchange(
        self, head: bytes, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        assert self.transport is not None
        self._headers, self._body, self._size = [], [], 0
        self._complete = self._keep_alive = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        await self._waiter
        self.idle_since = time.monotonic()
        return self._parser.get_status_code(), self._headers, b"".join(self._body)

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and self._keep_alive
            and time.monotonic() - self.idle_since < IDLE_EXPIRY_SECONDS
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Pool:
    slots: asyncio.Semaphore
    idle: deque[_ResponseProtocol] = field(default_factory=deque)


class LeanHttpTransport(httpx.AsyncBaseTransport):
    """At most `max_connections` connections per origin; idle ones are reused (LIFO)."""

    def __init__(self, *, max_connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max_connections = max_connections
        self._ssl = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self._pools: dict[Origin, _Pool] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in {"http", "https"}:
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}")
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        try:
            status, headers, content = await self.exchange(
                origin,
                _request_head(request, body),
                body,
                connect_timeout=timeouts.get("connect"),
                read_timeout=timeouts.get("read"),
            )
        except httpx.ReadTimeout:
            raise httpx.ReadTimeout("no answer in time", request=request) from None
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def exchange(
        self,
        origin: Origin,
        head: bytes,
        body: bytes,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One request (its head already serialised) on a pooled connection: status, raw
        headers and the whole (still content-encoded) body."""
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(asyncio.Semaphore(self._max_connections))
        async with pool.slots:
            connection = self._idle_connection(pool)
            if connection is None:
                connection = await self._connect_within(origin, connect_timeout)
            try:
                async with asyncio.timeout(read_timeout):
                    answer = await connection.exchange(head, body)
            except TimeoutError:
                connection.close()
                raise httpx.ReadTimeout("no answer in time") from None
            except BaseException:
                connection.close()
                raise
            if connection.reusable:
                pool.idle.append(connection)
            else:
                connection.close()
        return answer

    async def aclose(self) -> None:
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()

    @staticmethod
    def _idle_connection(pool: _Pool) -> _ResponseProtocol | None:
        while pool.idle:
            connection = pool.idle.pop()
            if connection.reusable:
                return connection
            connection.close()
        return None

    async def _connect_within(self, origin: Origin, seconds: float | None) -> _ResponseProtocol:
        _, host, port = origin
        try:
            async with asyncio.timeout(seconds):
                return await self._connect(origin)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect ({type(exc).__name__})") from exc

    async def _connect(self, origin: Origin) -> _ResponseProtocol:
        scheme, host, port = origin
        secure = scheme == "https"
        _, protocol = await asyncio.get_running_loop().create_connection(
            _ResponseProtocol,
            host,
            port,
            ssl=self._ssl if secure else None,
            server_hostname=host if secure else None,
        )
        return protocol


class AnswerHeaders:
    """A lean answer's headers: `get` by name, case-insensitively; repeated names are joined
    with ", " as httpx joins them."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, key: str, default: Any = None) -> Any:
        wanted = key.lower().encode("latin-1")
        values = [value for name, value in self._raw if name.lower() == wanted]
        if not values:
            return default
        return b", ".join(values).decode("latin-1")


class LeanAnswer:
    """What `LeanHttpClient.post_bytes` returns: the parts of `httpx.Response` the channel
    providers read (`status_code`, `headers.get`, `text`, `json()`), with the body decoded."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: AnswerHeaders, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(_charset(self.headers.get("content-type")), errors="replace")

    def json(self) -> Any:
        """Raises `ValueError` (a `json.JSONDecodeError`) on a body that is not JSON, as httpx."""
        return orjson.loads(self.content)


def _charset(content_type: str | None) -> str:
    """The declared charset when Python knows it, else UTF-8 (what httpx assumes)."""
    if content_type:
        for parameter in content_type.split(";")[1:]:
            name, _, value = parameter.strip().partition("=")
            if name.lower() == "charset" and value:
                try:
                    return codecs.lookup(value.strip().strip('"')).name
                except LookupError:
                    break
    return "utf-8"


@dataclass(frozen=True, slots=True)
class _Target:
    """A POST target parsed once: where to connect and the head's fixed start."""

    origin: Origin
    start: bytes  # request line and Host header


class LeanHttpClient(httpx.AsyncClient):
    """httpx's client on `LeanHttpTransport`, handing each plain request straight to it.

    `AsyncClient.send` wraps every request in an auth flow, a redirect loop, a cookie jar update
    and an INFO log line; together they cost about as much as the wire. The vendors' APIs use
    none of them (tokens travel in headers or the URL, no redirects are followed, no cookies
    are kept), and the log line would print URLs, which for Telegram hold the bot token.
    Anything else (streaming, an explicit auth or redirects) goes the stock way.
    """

    def __init__(self, *, timeout: float, max_connections: int) -> None:
        self._lean = LeanHttpTransport(max_connections=max_connections)
        super().__init__(
            timeout=httpx.Timeout(timeout), transport=self._lean, follow_redirects=False
        )
        self._urls: dict[str, httpx.URL] = {}
        self._targets: dict[str, _Target] = {}
        # The client's default headers (Accept, Accept-Encoding, Connection, User-Agent), as
        # serialised lines, sent unless the request names the same header.
        self._default_lines = [
            (name.lower(), name + b": " + value + b"\r\n") for name, value in self.headers.raw
        ]

    async def post_bytes(self, url: str, content: bytes, headers: Mapping[str, str]) -> LeanAnswer:
        """POST `content` to an absolute http(s) URL: what the vendors' calls are. The same
        request on the wire as `post(url, content=..., headers=...)` and the same exceptions,
        at a quarter of the CPU: no `httpx.Request` / `httpx.Response` objects, the URL parsed
        once per URL, the head written straight from `headers`."""
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        target = self._targets.get(url) or self._target(url)
        named = {name.lower().encode("latin-1") for name in headers}
        lines = [target.start]
        lines.extend(line for name, line in self._default_lines if name not in named)
        for name, value in headers.items():
            if name.lower() in _LENGTH_HEADERS:
                continue  # the body is sent whole, with its length
            line = f"{name}: {value}\r\n"
            if line.count("\n") != 1 or "\r" in line[:-2]:
                raise httpx.LocalProtocolError(f"header {name!r} contains a line break")
            lines.append(line.encode("latin-1"))
        lines.append(b"Content-Length: %d\r\n\r\n" % len(content))
        timeout = self.timeout
        status, raw, body = await self._lean.exchange(
            target.origin,
            b"".join(lines),
            content,
            connect_timeout=timeout.connect,
            read_timeout=timeout.read,
        )
        answer_headers = AnswerHeaders(raw)
        encoding = answer_headers.get("content-encoding")
        if encoding is not None and encoding.lower() != "identity":
            # Compressed (we accept what httpx accepts): httpx's decoders undo it.
            body = httpx.Response(status, headers=raw, stream=httpx.ByteStream(body)).read()
        return LeanAnswer(status, answer_headers, body)

    def _target(self, url: str) -> _Target:
        parsed = httpx.URL(url)  # raises httpx.InvalidURL
        if parsed.scheme not in {"http", "https"}:
            raise httpx.UnsupportedProtocol(f"unsupported scheme {parsed.scheme!r}")
        if not parsed.host:
            raise httpx.UnsupportedProtocol("the URL names no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        start = b"POST %s HTTP/1.1\r\nHost: %s\r\n" % (parsed.raw_path, parsed.netloc)
        target = _Target((parsed.scheme, parsed.host, port), start)
        if len(self._targets) >= URL_CACHE_SIZE:
            self._targets.clear()
        self._targets[url] = target
        return target

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: RequestContent | None = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        json: Any | None = None,
        params: QueryParamTypes | None = None,
        headers: HeaderTypes | None = None,
        cookies: CookieTypes | None = None,
        timeout: TimeoutTypes | UseClientDefault = httpx.USE_CLIENT_DEFAULT,
        extensions: RequestExtensions | None = None,
    ) -> httpx.Request:
        """The stock request, built in a quarter of the time for what the vendors' calls send:
        bytes to an absolute URL with headers. Parsing the URL string is most of the stock
        cost, and a vendor's endpoints repeat (one per API method and token), so each is parsed
        once."""
        plain = (
            isinstance(url, str)
            and isinstance(content, bytes)
            and data is None
            and files is None
            and json is None
            and params is None
            and cookies is None
            and timeout is httpx.USE_CLIENT_DEFAULT
            and extensions is None
            and not self.cookies
        )
        parsed = self._absolute_url(url) if plain and isinstance(url, str) else None
        if parsed is None:
            return super().build_request(
                method,
                url,
                content=content,
                data=data,
                files=files,
                json=json,
                params=params,
                headers=headers,
                cookies=cookies,
                timeout=timeout,
                extensions=extensions,
            )
        merged = httpx.Headers(self.headers)
        merged.update(headers)
        return httpx.Request(
            method,
            parsed,
            content=content,
            headers=merged,
            extensions={"timeout": self.timeout.as_dict()},
        )

    def _absolute_url(self, url: str) -> httpx.URL | None:
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = httpx.URL(url)
            if parsed.is_relative_url:
                return None  # merged with base_url the stock way
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[url] = parsed
        return parsed

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        plain = (
            not stream
            and auth is httpx.USE_CLIENT_DEFAULT
            and follow_redirects is not True
            and not self.is_closed
            and "timeout" in request.extensions  # set by build_request, as post() does
        )
        if not plain:
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        response = await self._lean.handle_async_request(request)
        await response.aread()  # in memory already: this only decodes it
        return response


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), target)]
    headers = request.headers
    has_length = False
    for name, value in headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            continue  # the body is sent whole, with its length
        if lowered == b"content-length":
            has_length = True
            lines.append(name + b": " + str(len(body)).encode())
        else:
            lines.append(name + b": " + value)
    if not has_length and (body or request.method in {"POST", "PUT", "PATCH"}):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"
