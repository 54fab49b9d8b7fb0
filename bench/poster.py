"""A minimal HTTP/1.1 keep-alive client for the benchmark's load generator: JSON `POST`s to one
path of one `http://` origin, over a pool of persistent connections.

Why not httpx: the load generator shares two cores with the system it measures, and httpx's
request and response models, header handling and transport layers were about a third of the
harness's CPU. This sends one pre-encoded request head (`Host`, the caller's headers such as
`Authorization`, `Content-Type: application/json`, `Content-Length`) plus the body in one write,
and reads back only what the benchmark needs: the status code, and when it was parsed.

What it understands of a response: the status line (`HTTP/1.0` or `HTTP/1.1`; interim `1xx`
answers are skipped), `Content-Length` (the body is counted, not kept), `Connection: close`
(the connection is closed after the answer and the next request opens a new one). A response
without a length is read to the connection's end; `Transfer-Encoding: chunked` is not
supported (npsloop-ingest's uvicorn always sends a length for these answers).

Failures: a request that gets no parsable answer — connecting fails, the connection breaks, the
answer is malformed or later than the timeout — raises `PostFailed`, and its connection is
closed, never reused. Nothing is re-sent: whether to count a failure is the caller's call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

# uvicorn closes a keep-alive connection after 5 s idle; one idle longer than this is closed
# here instead of racing the server's close with a request (which would count as refused).
IDLE_EXPIRY_SECONDS: Final = 4.0
MAX_HEAD_BYTES: Final = 64 * 1024
UNTIL_CLOSE: Final = -1


class PostFailed(Exception):
    """The request got no HTTP answer (see the module docstring); it was not re-sent."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    at: float  # `time.perf_counter()` when the whole response had been parsed


@dataclass(frozen=True, slots=True)
class _Head:
    status: int
    length: int  # UNTIL_CLOSE: the body ends with the connection
    keep_alive: bool


def parse_head(head: bytes) -> _Head:
    """A response head, without its final empty line; raises `PostFailed` when malformed."""
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in {b"HTTP/1.1", b"HTTP/1.0"} or len(code) != 3 or not code.isdigit():
        raise PostFailed(f"malformed status line {lines[0][:80]!r}")
    status = int(code)
    length: int | None = None
    connection: set[bytes] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise PostFailed(f"malformed header line {line[:80]!r}")
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or (length is not None and length != int(value)):
                raise PostFailed(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif name == b"connection":
            connection.update(token.strip() for token in value.lower().split(b","))
        elif name == b"transfer-encoding":
            raise PostFailed("Transfer-Encoding is not supported")
    if version == b"HTTP/1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection
    if status in {204, 304} or status < 200:
        length = 0
    if length is None:
        return _Head(status, UNTIL_CLOSE, keep_alive=False)
    return _Head(status, length, keep_alive)


class _Connection(asyncio.Protocol):
    """One connection; one request in flight at a time."""

    def __init__(self) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses; write/close are used.
        self.transport: Any = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None
        self._head: _Head | None = None
        self._body_left = 0

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # the server spoke out of turn: not a connection to reuse
            return
        try:
            self._parse(data)
        except PostFailed as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head is not None and self._head.length == UNTIL_CLOSE:
            self._complete()
        else:
            self._fail(PostFailed("the server closed the connection"))

    # one exchange ---------------------------------------------------------------------------

    def exchange(self, request: bytes) -> asyncio.Future[Answer]:
        self._waiter = asyncio.get_running_loop().create_future()
        self._buffer.clear()
        self._head = None
        self.transport.write(request)
        return self._waiter

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and not self.transport.is_closing()
            and time.monotonic() - self.idle_since < IDLE_EXPIRY_SECONDS
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _parse(self, data: bytes) -> None:
        if self._head is None:
            self._buffer += data
            while self._head is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD_BYTES:
                        raise PostFailed("response head too large")
                    return
                head = parse_head(bytes(self._buffer[:end]))
                del self._buffer[: end + 4]
                if head.status >= 200:  # 1xx: an interim answer, the real one follows
                    self._head, self._body_left = head, head.length
            data = bytes(self._buffer)
            self._buffer.clear()
        if self._head.length == UNTIL_CLOSE:
            return
        self._body_left -= len(data)
        if self._body_left < 0:
            raise PostFailed("more bytes than the response's Content-Length")
        if self._body_left == 0:
            self._complete()

    def _complete(self) -> None:
        at = time.perf_counter()
        head, waiter = self._head, self._waiter
        assert head is not None
        self._head = None
        self.idle_since = time.monotonic()
        if not head.keep_alive:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(head.status, at))

    def _fail(self, error: PostFailed) -> None:
        self._head = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)
        self.close()


class JsonPoster:
    """`POST`s JSON bodies to `url` (an `http://host:port/path` address) over at most
    `connections` keep-alive connections. Callers beyond that wait here for a free one; an idle
    connection is taken most-recently-used first, so a low rate keeps a few warm rather than
    letting all of them go stale."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        connections: int,
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an http:// address is needed, not {url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        lines = [
            f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.netloc}",
            *(f"{name}: {value}" for name, value in headers.items()),
            "Content-Type: application/json",
            "Content-Length: ",
        ]
        self._head = "\r\n".join(lines).encode("latin-1")
        self._timeout = timeout
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self.connects = 0  # connections opened so far

    async def post(self, body: bytes) -> Answer:
        """Send `body`; the answer's status and parse time, or `PostFailed`."""
        request = b"%s%d\r\n\r\n%s" % (self._head, len(body), body)
        async with self._slots:
            connection = self._idle_connection() or await self._connect()
            try:
                async with asyncio.timeout(self._timeout):
                    answer = await connection.exchange(request)
            except TimeoutError:
                connection.close()
                raise PostFailed("no answer in time") from None
            except BaseException:
                connection.close()
                raise
            if connection.reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._timeout):
                _, connection = await asyncio.get_running_loop().create_connection(
                    _Connection, self._host, self._port
                )
        except (OSError, TimeoutError) as exc:
            raise PostFailed(f"cannot connect ({type(exc).__name__})") from exc
        self.connects += 1
        return connection
