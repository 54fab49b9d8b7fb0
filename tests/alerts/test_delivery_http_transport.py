"""The lean HTTP transport against real local servers: keep-alive reuse, chunked and gzip
answers through httpx, and failures surfacing as httpx's own exceptions; and the client's
`post_bytes` path, which must put the same request on the wire and answer the same way."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from npsloop_alerts.delivery.http_transport import (
    AnswerHeaders,
    LeanAnswer,
    LeanHttpClient,
    LeanHttpTransport,
)

Scope = dict[str, Any]


async def _app(scope: Scope, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/slow":
        await asyncio.sleep(2)
    if path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/gzip":
        payload = gzip.compress(b'{"ok": true}')
        headers = [(b"content-encoding", b"gzip"), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return
    peer = f"{scope['client'][1]}".encode()
    headers = [(b"x-peer-port", peer), (b"content-type", b"application/json")]
    if path.startswith("/cookie"):
        headers.append((b"set-cookie", b"session=abc"))
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"echo": ' + (body or b"null") + b"}"})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_app, log_level="warning", lifespan="off", access_log=False)
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve(sockets=[listener]))
    while not running.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    running.should_exit = True
    await task


@pytest.fixture(params=["stock client", "lean client"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """Every test runs through httpx's own client on the transport, and through ours."""
    http = (
        httpx.AsyncClient(
            transport=LeanHttpTransport(max_connections=4), timeout=httpx.Timeout(1.0)
        )
        if request.param == "stock client"
        else LeanHttpClient(timeout=1.0, max_connections=4)
    )
    async with http:
        yield http


async def test_the_lean_client_keeps_no_cookies_and_logs_no_urls(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="httpx")
    async with LeanHttpClient(timeout=1.0, max_connections=1) as http:
        answer = await http.post(f"{server}/cookie/bot123:SECRET/sendMessage", content=b"{}")

        assert answer.status_code == 201
        assert answer.headers["set-cookie"] == "session=abc"
        assert not http.cookies
    assert "SECRET" not in caplog.text


async def test_the_lean_client_streams_the_stock_way(server: str) -> None:
    async with (
        LeanHttpClient(timeout=1.0, max_connections=1) as http,
        http.stream("POST", f"{server}/echo", content=b"[1]") as answer,
    ):
        assert (await answer.aread()) == b'{"echo": [1]}'


async def test_the_lean_client_builds_the_request_httpx_would() -> None:
    url = "https://api.telegram.org/bot123:SECRET/sendMessage?x=1"
    headers = {"Content-Type": "application/json", "User-Agent": "npsloop"}
    async with (
        LeanHttpClient(timeout=2.5, max_connections=1) as lean,
        httpx.AsyncClient(timeout=httpx.Timeout(2.5)) as stock,
    ):
        for _ in range(2):  # the second build uses the parsed URL it kept
            built = lean.build_request("POST", url, content=b'{"a":1}', headers=headers)
            expected = stock.build_request("POST", url, content=b'{"a":1}', headers=headers)

            assert built.url == expected.url
            assert built.headers.multi_items() == expected.headers.multi_items()
            assert built.content == expected.content
            assert built.extensions == expected.extensions
        # Anything else (here a JSON body and a relative URL) is the stock build.
        relative = lean.build_request("POST", "/relative", json={"a": 1})
        assert relative.url == stock.build_request("POST", "/relative").url
        assert relative.content == b'{"a":1}'


async def test_a_post_round_trips_through_httpx(server: str, client: httpx.AsyncClient) -> None:
    answer = await client.post(f"{server}/echo", json={"text": "olá 你好"})

    assert answer.status_code == 201
    assert answer.json() == {"echo": {"text": "olá 你好"}}


async def test_keep_alive_connections_are_reused(server: str, client: httpx.AsyncClient) -> None:
    ports = {
        (await client.post(f"{server}/echo", content=b"1")).headers["x-peer-port"]
        for _ in range(20)
    }

    assert len(ports) == 1


async def test_concurrent_requests_stay_within_the_connection_limit(
    server: str, client: httpx.AsyncClient
) -> None:
    answers = await asyncio.gather(
        *(client.post(f"{server}/echo", content=b"2") for _ in range(40))
    )

    assert {answer.status_code for answer in answers} == {201}
    assert len({answer.headers["x-peer-port"] for answer in answers}) <= 4


async def test_chunked_and_gzip_answers_are_decoded(server: str, client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{server}/chunked")).text == "one,two,three"
    assert (await client.get(f"{server}/gzip")).json() == {"ok": True}


async def test_a_slow_answer_is_a_read_timeout_and_its_connection_is_not_reused(
    server: str, client: httpx.AsyncClient
) -> None:
    first_port = (await client.post(f"{server}/echo", content=b"3")).headers["x-peer-port"]

    with pytest.raises(httpx.ReadTimeout):
        await client.post(f"{server}/slow", content=b"4")

    # The idle connection served the slow request and was closed after it: a new one now.
    after = await client.post(f"{server}/echo", content=b"5")
    assert after.status_code == 201
    assert after.headers["x-peer-port"] != first_port


async def test_nobody_listening_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(httpx.ConnectError):
        await client.post(f"http://127.0.0.1:{port}/", content=b"x")


async def test_a_connection_closed_without_an_answer_is_a_read_error(
    client: httpx.AsyncClient,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    closer = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = closer.sockets[0].getsockname()[1]
    try:
        with pytest.raises(httpx.ReadError):
            await client.post(f"http://127.0.0.1:{port}/", content=b"x")
    finally:
        closer.close()
        await closer.wait_closed()


async def test_garbage_instead_of_http_is_a_protocol_error(client: httpx.AsyncClient) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP 220 hello\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post(f"http://127.0.0.1:{port}/", content=b"x")
    finally:
        server.close()
        await server.wait_closed()


async def test_only_http_and_https_are_spoken(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.post("ftp://127.0.0.1/file", content=b"x")


# --- post_bytes: the channel providers' lean path -------------------------------------------------


async def _capture_one_request(
    send: Callable[[str], Awaitable[object]],
) -> bytes:
    """The first request `send(url)` puts on the wire (answered with 200 {}), as bytes."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        received.set_result(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()

    capture = await asyncio.start_server(record, "127.0.0.1", 0)
    port = capture.sockets[0].getsockname()[1]
    try:
        await send(f"http://127.0.0.1:{port}/bot123:SECRET/sendMessage?x=1")
        # Two captures listen on different ports: the Host header is compared without it.
        return (await received).replace(f"127.0.0.1:{port}".encode(), b"capture")
    finally:
        capture.close()
        await capture.wait_closed()


def _head_and_body(request: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, body = request.split(b"\r\n\r\n", 1)
    request_line, *header_lines = head.split(b"\r\n")
    headers = sorted(
        name.lower() + b":" + value.strip()
        for name, value in (line.split(b":", 1) for line in header_lines)
    )
    return request_line, headers, body


async def test_post_bytes_puts_on_the_wire_what_httpx_would() -> None:
    body = '{"text": "olá 你好"}'.encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer xoxb-1"}
    async with LeanHttpClient(timeout=1.0, max_connections=1) as http:
        stock = await _capture_one_request(
            lambda url: http.post(url, content=body, headers=headers)
        )
        lean = await _capture_one_request(lambda url: http.post_bytes(url, body, headers))

    assert _head_and_body(lean) == _head_and_body(stock)
    assert _head_and_body(lean)[0] == b"POST /bot123:SECRET/sendMessage?x=1 HTTP/1.1"


async def test_post_bytes_lets_the_caller_override_a_default_header() -> None:
    async with LeanHttpClient(timeout=1.0, max_connections=1) as http:
        sent = await _capture_one_request(
            lambda url: http.post_bytes(url, b"{}", {"User-Agent": "npsloop/1"})
        )

    _, headers, _ = _head_and_body(sent)
    assert [h for h in headers if h.startswith(b"user-agent:")] == [b"user-agent:npsloop/1"]


async def test_post_bytes_answers_as_httpx_does(server: str) -> None:
    async with LeanHttpClient(timeout=1.0, max_connections=2) as http:
        for path, content in [
            ("/echo", '{"a": "olá"}'.encode()),
            ("/chunked", b""),
            ("/gzip", b""),
        ]:
            stock = await http.post(f"{server}{path}", content=content)
            lean = await http.post_bytes(f"{server}{path}", content, {})

            assert lean.status_code == stock.status_code
            assert lean.text == stock.text
            assert lean.headers.get("Content-Type") == stock.headers.get("content-type")
            assert lean.headers.get("x-missing", "none") == "none"
            if path != "/chunked":
                assert lean.json() == stock.json()
    with pytest.raises(ValueError, match="line 1 column 1"):
        LeanAnswer(200, AnswerHeaders([]), b"not json").json()


async def test_post_bytes_decodes_text_in_the_declared_charset() -> None:
    answer = LeanAnswer(
        200,
        AnswerHeaders([(b"Content-Type", b'text/plain; charset="ISO-8859-1"')]),
        "olá".encode("latin-1"),
    )
    assert answer.text == "olá"
    assert LeanAnswer(200, AnswerHeaders([]), "你好".encode()).text == "你好"


async def test_post_bytes_reuses_connections_within_the_limit(server: str) -> None:
    async with LeanHttpClient(timeout=1.0, max_connections=3) as http:
        one_by_one = {
            (await http.post_bytes(f"{server}/echo", b"1", {})).headers.get("x-peer-port")
            for _ in range(10)
        }
        together = await asyncio.gather(
            *(http.post_bytes(f"{server}/echo", b"2", {}) for _ in range(30))
        )

    assert len(one_by_one) == 1
    assert len({answer.headers.get("x-peer-port") for answer in together}) <= 3


async def test_post_bytes_fails_with_httpx_exceptions(server: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()[1]
    async with LeanHttpClient(timeout=1.0, max_connections=1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post_bytes(f"{server}/slow", b"x", {})
        with pytest.raises(httpx.ConnectError):
            await http.post_bytes(f"http://127.0.0.1:{nobody}/", b"x", {})
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.post_bytes("ftp://127.0.0.1/file", b"x", {})
        with pytest.raises(httpx.InvalidURL):
            await http.post_bytes("http://[::1/", b"x", {})
        with pytest.raises(httpx.LocalProtocolError):
            await http.post_bytes(f"{server}/echo", b"x", {"X-Note": "a\r\nX-Injected: 1"})
        # After all that, the client still works.
        assert (await http.post_bytes(f"{server}/echo", b"7", {})).json() == {"echo": 7}
    with pytest.raises(RuntimeError):
        await http.post_bytes(f"{server}/echo", b"x", {})
