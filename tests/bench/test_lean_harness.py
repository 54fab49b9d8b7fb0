"""The benchmark's lean receivers and poster speak real protocols to real clients and servers:
the SMTP sink to `aiosmtplib` (the email channel's client) and to a pipelining raw socket, the
keep-alive poster to a small HTTP/1.1 server on a local socket."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiosmtplib
import httpx
import orjson
import pytest

from bench.alerts import (
    INGEST_TOKEN,
    Arrivals,
    MailCounter,
    Posted,
    broker_env,
    collector_paused,
    drain,
    post_steadily,
    start_receivers,
)
from bench.poster import JsonPoster, PostFailed, parse_head
from bench.smtp_sink import SmtpSink
from npsloop_alerts.alerting.service import alert_id_for

pytestmark = pytest.mark.timeout(30)

# --- SMTP sink ------------------------------------------------------------------------------


@dataclass
class Sink:
    port: int
    messages: list[bytes]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    messages: list[bytes] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: SmtpSink(messages.append, hostname="mx.test"), "127.0.0.1", 0
    )
    yield Sink(server.sockets[0].getsockname()[1], messages)
    server.close()
    await server.wait_closed()


def mail(subject: str, *body_lines: str) -> bytes:
    head = f"From: npsloop@example.test\r\nTo: owner@example.test\r\nSubject: {subject}\r\n\r\n"
    return (head + "".join(line + "\r\n" for line in body_lines)).encode()


async def test_sink_takes_many_messages_per_aiosmtplib_connection(sink: Sink) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, timeout=10)
    await client.connect()
    assert client.supports_extension("pipelining")
    assert client.supports_extension("8bitmime")
    assert client.supports_extension("smtputf8")
    assert client.supports_extension("size")
    assert not client.supports_extension("starttls")  # so the client stays in clear text
    assert not client.is_ehlo_or_helo_needed

    first = mail("one", "plain", ".x", "..y", ".")
    utf8 = mail("dois", "Não gostei — 配送太慢了", "Ünïcödé line")
    third = mail("three", "after a reset")
    for message in (first, utf8):
        refused, reply = await client.sendmail(
            "npsloop@example.test",
            ["owner@example.test"],
            message,
            mail_options=["BODY=8BITMIME", "SMTPUTF8"] if message is utf8 else [],
        )
        assert (refused, reply) == ({}, "2.0.0 OK: message accepted")
    await client.mail("npsloop@example.test")
    await client.rcpt("someone-else@example.test")
    assert (await client.rset()).code == 250
    await client.sendmail("npsloop@example.test", ["dono@exemplo.test"], third)
    assert (await client.noop()).code == 250
    assert (await client.quit()).code == 221
    assert not client.is_connected

    # Dot-stuffed on the wire (".x" sent as "..x"), undone on arrival; 8-bit bytes unchanged.
    assert sink.messages == [first, utf8, third]
    assert b"\r\n.x\r\n..y\r\n.\r\n" in sink.messages[0]
    assert "配送太慢了".encode() in sink.messages[1]


async def test_sink_serves_a_pool_of_aiosmtplib_connections(sink: Sink) -> None:
    async def send_five(connection: int) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, timeout=10) as client:
            for number in range(5):
                await client.sendmail(
                    "npsloop@example.test",
                    [f"owner{connection}@example.test"],
                    mail(f"{connection}-{number}", "body"),
                )

    await asyncio.gather(*(send_five(connection) for connection in range(4)))

    subjects = sorted(message.split(b"Subject: ")[1].split(b"\r\n")[0] for message in sink.messages)
    assert subjects == sorted(f"{c}-{n}".encode() for c in range(4) for n in range(5))


async def replies_until_closed(reader: asyncio.StreamReader) -> list[bytes]:
    """Reply codes of every (last) reply line, in order, until the server closes."""
    codes = []
    while line := await reader.readline():
        if line[3:4] == b" ":
            codes.append(line[:3])
    return codes


async def test_sink_answers_pipelined_and_split_commands_in_order(sink: Sink) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    assert (await reader.readline()).startswith(b"220 ")
    # A whole pipelined transaction in one packet, then the message in pieces: the end-of-data
    # line is split across writes, and the next commands arrive in the same packet as its end.
    writer.write(
        b"EHLO client.test\r\nMAIL FROM:<a@example.test> SIZE=60\r\n"
        b"RCPT TO:<b@example.test>\r\nDATA\r\n"
    )
    for piece in (b"Subject: split\r\n\r\n..dot", b"ted\r\nline\r", b"\n.", b"\r\nNO", b"OP\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(
        b"RCPT TO:<c@example.test>\r\n"  # no transaction any more: out of order
        b"MAIL FROM:<a@example.test> FANCY=yes\r\n"  # a parameter it does not know
        b"MAIL FROM:<a@example.test> SIZE=999999999999\r\n"  # over the advertised SIZE
        b"MAIL FROM:a@example.test\r\n"  # no angle brackets
        b"MAIL FROM:<>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n.\r\n"  # an empty message
        b"STARTTLS\r\nVRFY b\r\nRSET\r\nQUIT\r\nNOOP\r\n"  # nothing after QUIT is answered
    )
    await writer.drain()

    codes = await replies_until_closed(reader)
    writer.close()

    assert codes == [
        b"250",  # EHLO
        b"250",  # MAIL
        b"250",  # RCPT
        b"354",  # DATA
        b"250",  # the message
        b"250",  # NOOP
        b"503",
        b"555",
        b"552",
        b"501",
        b"250",  # MAIL FROM:<>
        b"250",
        b"354",
        b"250",  # the empty message
        b"502",  # STARTTLS is not offered
        b"502",
        b"250",  # RSET
        b"221",
    ]
    assert sink.messages == [b"Subject: split\r\n\r\n.dotted\r\nline\r\n", b""]


async def test_mail_counter_notes_the_alert_in_the_message_id(sink: Sink) -> None:
    arrivals = Arrivals()
    counter = MailCounter(arrivals)
    alert_id = "0b6f8a52-3c1e-4d8e-9a43-2f1d6c0e7b11"
    message = mail("alert", "body").replace(
        b"Subject:", f"Message-ID: <alert-{alert_id}.0@npsloop.test>\r\nSubject:".encode()
    )
    before = time.perf_counter()
    for raw in (message, mail("no alert here", "body")):
        counter(raw)

    assert list(arrivals.times) == [(alert_id, "email")]
    assert arrivals.times[alert_id, "email"][0] >= before


# --- poster ---------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 202
    close: bool = False  # answer with `Connection: close`, then close
    hang_up: bool = False  # close without answering
    split: bool = False  # the head and the body in separate writes


@dataclass
class HttpServer:
    """HTTP/1.1 on a raw socket: reads each request whole, answers what `decide` says."""

    decide: Callable[[bytes], Reply]
    port: int = 0
    connections: int = 0
    requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                lines = head[:-4].split(b"\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(b":") for line in lines[1:])
                }
                body = await reader.readexactly(int(headers[b"content-length"]))
                self.requests.append((lines[0], headers, body))
                reply = self.decide(body)
                if reply.hang_up:
                    return
                content = b'{"ok":true}'
                answer = (
                    b"HTTP/1.1 %d Whatever\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n%s\r\n"
                    % (reply.status, len(content), b"connection: close\r\n" if reply.close else b"")
                )
                writer.write(answer)
                if reply.split:
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(content)
                await writer.drain()
                if reply.close:
                    return
        finally:
            writer.close()


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    server = HttpServer(decide=lambda body: Reply(**orjson.loads(body)))
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    yield server
    listener.close()


async def test_poster_keeps_connections_alive_and_reports_each_status(
    http_server: HttpServer,
) -> None:
    poster = JsonPoster(
        f"http://127.0.0.1:{http_server.port}/v1/responses",
        headers={"Authorization": "Bearer secret"},
        connections=4,
    )
    statuses = [202, 400, 202, 503, 202, 422] * 5
    bodies = [
        orjson.dumps({"status": status, "split": n % 4 == 0}) for n, status in enumerate(statuses)
    ]

    answers = await asyncio.gather(*(poster.post(body) for body in bodies))
    await poster.aclose()

    assert [answer.status for answer in answers] == statuses
    assert http_server.connections == poster.connects <= 4
    request_line, headers, _ = http_server.requests[0]
    assert request_line == b"POST /v1/responses HTTP/1.1"
    assert headers[b"authorization"] == b"Bearer secret"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"host"] == f"127.0.0.1:{http_server.port}".encode()
    assert sorted(body for _, _, body in http_server.requests) == sorted(bodies)


async def test_poster_reconnects_after_connection_close_and_counts_a_hang_up_as_failed(
    http_server: HttpServer,
) -> None:
    poster = JsonPoster(f"http://127.0.0.1:{http_server.port}/x", headers={}, connections=1)

    assert (await poster.post(b'{"status": 202}')).status == 202
    assert (await poster.post(b'{"status": 202, "close": true}')).status == 202
    assert (await poster.post(b'{"status": 409}')).status == 409  # on a new connection
    with pytest.raises(PostFailed):
        await poster.post(b'{"hang_up": true}')
    assert (await poster.post(b'{"status": 202}')).status == 202
    await poster.aclose()

    assert poster.connects == http_server.connections == 3
    assert len(http_server.requests) == 5  # the failed one was not sent again


async def test_poster_fails_when_nothing_listens() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    poster = JsonPoster(f"http://127.0.0.1:{port}/", headers={}, connections=2)

    with pytest.raises(PostFailed):
        await poster.post(b"{}")


def test_response_heads_are_read_for_status_length_and_keep_alive() -> None:
    head = parse_head(b"HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\nConnection: Close")
    assert (head.status, head.length, head.keep_alive) == (202, 12, False)
    head = parse_head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive")
    assert (head.status, head.length, head.keep_alive) == (200, 0, True)
    head = parse_head(b"HTTP/1.1 204 No Content")
    assert (head.status, head.length, head.keep_alive) == (204, 0, True)
    for malformed in (b"HTTP/2 200", b"HTTP/1.1 2x0 OK", b"HTTP/1.1 200 OK\r\nno colon"):
        with pytest.raises(PostFailed):
            parse_head(malformed)


async def test_bench_counts_202_as_accepted_and_anything_else_as_refused() -> None:
    def decide(body: bytes) -> Reply:
        response = orjson.loads(body)
        score = response["score"]
        return Reply(status=429 if score == 3 else 202, close=score == 5)

    server = HttpServer(decide=decide)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    posted = Posted()
    before = time.perf_counter()

    await post_steadily(
        f"http://127.0.0.1:{port}", rate=200, duration=0.35, accounts=3, posted=posted, prefix="t"
    )
    listener.close()

    refused = [n for n in range(70) if n % 7 == 3]
    accepted = [n for n in range(70) if n % 7 != 3]
    assert posted.refused == len(refused)
    assert set(posted.accepted) == {str(alert_id_for("api", f"t-{n}")) for n in accepted}
    assert all(at > before for at in posted.accepted.values())
    assert server.connections >= 10  # a new one after each `Connection: close`
    request_line, headers, body = server.requests[0]
    assert request_line == b"POST /v1/responses HTTP/1.1"
    assert headers[b"authorization"] == f"Bearer {INGEST_TOKEN}".encode()
    assert orjson.loads(body)["account_id"].startswith("bench-acc-")


def test_the_harness_does_not_collect_while_it_measures_and_collects_after() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    with collector_paused():
        during = gc.isenabled()
        Cycle()
        collections_before = gc.get_stats()[2]["collections"]
    after = gc.isenabled()

    assert during is False
    assert after is True
    assert gc.get_stats()[2]["collections"] == collections_before + 1  # the one afterwards


def test_the_bench_broker_runs_both_jit_compilers_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NPSLOOP_KAFKA_JVM_OPTS", raising=False)
    steady = broker_env()
    assert "TieredStopAtLevel" not in steady["NPSLOOP_KAFKA_JVM_OPTS"]
    assert steady["NPSLOOP_KAFKA_PORT"] == ""  # still a free port of its own

    monkeypatch.setenv("NPSLOOP_KAFKA_JVM_OPTS", "-Xmx1g")
    assert "NPSLOOP_KAFKA_JVM_OPTS" not in broker_env()  # the caller's flags reach the script


# --- draining -------------------------------------------------------------------------------


async def test_drain_parses_the_receivers_requests_only_once_enough_have_arrived() -> None:
    # Parsing a whole run's requests at once stalls the receivers, and so the stamping of the
    # messages still arriving: drain watches a cheap count and parses at the end.
    receivers = await start_receivers()
    alert_ids = [str(uuid.uuid4()) for _ in range(2)]
    try:
        async with httpx.AsyncClient(base_url=receivers.slack.url) as slack:

            async def post(alert_id: str) -> None:
                answer = await slack.post(
                    "/api/chat.postMessage",
                    headers={"Authorization": f"Bearer {receivers.slack.bot_token}"},
                    json={"channel": f"C{alert_id[:8].upper()}", "text": f"Alert {alert_id}"},
                )
                assert answer.json()["ok"], answer.text

            waiting = asyncio.create_task(drain(receivers, expected=2, stall=10))
            await post(alert_ids[0])
            await asyncio.sleep(0.6)  # a few of drain's polls

            assert not waiting.done()
            assert receivers.received() == 1
            assert receivers.arrivals.total == 0  # taken, not parsed yet

            await post(alert_ids[1])
            await asyncio.wait_for(waiting, 5)
    finally:
        await receivers.slack.stop()
        await receivers.telegram.stop()
        receivers.smtp.close()

    assert sorted(receivers.arrivals.times) == sorted((a, "slack") for a in alert_ids)
