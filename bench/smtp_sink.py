"""A small, real SMTP server for the alerts benchmark: it accepts every message and hands the
raw bytes to a callback.

Why not aiosmtpd (which the tests keep, as the reference server): in the benchmark the SMTP
receiver shares two cores with Kafka, PostgreSQL and the services under test, and aiosmtpd's
per-message work (a coroutine per command, a `StreamReader` per line, an `Envelope` and a
`Session`, header decoding) was about a fifth of the harness's CPU, taken from the system it
measures. This one is a single `asyncio.Protocol` that does only what the delivery loop's
`aiosmtplib` client needs, so the benchmark measures the alerts service rather than its sink.

What it speaks (RFC 5321, plus the extensions it advertises):

* greeting `220`; `EHLO` (multi-line `250`: `SIZE`, `8BITMIME`, `SMTPUTF8`, `PIPELINING` — no
  `STARTTLS`, no `AUTH`) and `HELO`;
* `MAIL FROM:<path>` with the parameters `SMTPUTF8`, `BODY=7BIT|8BITMIME` and `SIZE=n`,
  `RCPT TO:<path>` (no parameters), `DATA` (`354`, then the message up to the `CRLF.CRLF`
  line, dot-stuffing undone, then `250`), `RSET`, `NOOP`, `QUIT` (`221`, then it closes);
* any other command is answered `502`; commands out of order `503`, malformed ones `501`,
  unknown parameters `555`, a message over the size limit `552`;
* input is a byte stream: a command split across packets waits for its `CRLF`, several in one
  packet (pipelining) are answered in order, in one write.

Lines must end in CRLF (as `aiosmtplib` sends them); a command line longer than
`MAX_COMMAND_LINE` bytes is answered `500` and the connection closed. The callback runs inside
`data_received` as soon as the final `.` line is parsed, before the `250` is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

MAX_COMMAND_LINE: Final = 4096  # RFC 5321 says 512; parameters and SMTPUTF8 paths add to it
DEFAULT_MAX_MESSAGE_SIZE: Final = 32 * 1024 * 1024
END_OF_DATA: Final = b"\r\n.\r\n"

OK: Final = b"250 2.0.0 OK\r\n"
BAD_SEQUENCE: Final = b"503 5.5.1 Bad sequence of commands\r\n"
NOT_IMPLEMENTED: Final = b"502 5.5.2 Command not implemented\r\n"
BAD_PARAMETERS: Final = b"555 5.5.4 Parameters not recognized or not implemented\r\n"
TOO_BIG: Final = b"552 5.3.4 Message too big\r\n"


class SmtpSink(asyncio.Protocol):
    """One SMTP session. Use as `loop.create_server(lambda: SmtpSink(on_message), host, port)`;
    `on_message(raw)` gets each accepted message as it arrived (headers and body, every line
    ending in CRLF, dot-stuffing undone)."""

    def __init__(
        self,
        on_message: Callable[[bytes], object],
        *,
        hostname: str = "localhost",
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._on_message = on_message
        self._hostname = hostname.encode()
        self._max_size = max_message_size
        self._ehlo_reply = (
            b"250-%s\r\n250-SIZE %d\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n"
            % (self._hostname, max_message_size)
        )
        # uvloop's transports are not `asyncio.Transport` subclasses; write/close are used.
        self._transport: Any = None
        self._buffer = bytearray()
        self._in_data = False
        self._scanned = 0  # in DATA: where the search for the end of data goes on from
        self._oversize = False
        self._greeted = False
        self._mail_from: str | None = None
        self._recipients: list[str] = []
        self._closing = False

    # asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._transport.write(b"220 %s ESMTP bench sink\r\n" % self._hostname)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer += data
        replies: list[bytes] = []
        while not self._closing and (self._take_message(replies) or self._take_command(replies)):
            pass
        if replies:
            self._transport.write(b"".join(replies))
        if self._closing:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._buffer.clear()

    # the byte stream ------------------------------------------------------------------------

    def _take_message(self, replies: list[bytes]) -> bool:
        """In DATA: consume the message if its end arrived. The buffer starts with the CRLF
        that ended the `DATA` line, so an end-of-data line right away (an empty message) is
        found like any other."""
        if not self._in_data:
            return False
        buffer = self._buffer
        end = buffer.find(END_OF_DATA, self._scanned)
        if end < 0:
            if len(buffer) > self._max_size + 2:
                self._oversize = True  # keep reading to the end; keep only what may end it
                del buffer[:-4]
                self._scanned = 0
            else:
                self._scanned = max(0, len(buffer) - 4)
            return False
        # Every line that starts with "." before the end was dot-stuffed (RFC 5321 4.5.2).
        raw = bytes(buffer[: end + 2]).replace(b"\r\n.", b"\r\n")[2:]
        del buffer[: end + 5]
        self._in_data = False
        oversize = self._oversize or len(raw) > self._max_size
        self._reset_transaction()
        if oversize:
            replies.append(TOO_BIG)
        else:
            self._on_message(raw)
            replies.append(b"250 2.0.0 OK: message accepted\r\n")
        return True

    def _take_command(self, replies: list[bytes]) -> bool:
        if self._in_data:
            return False
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > MAX_COMMAND_LINE:
                replies.append(b"500 5.5.6 Line too long\r\n")
                self._closing = True
            return False
        if end > MAX_COMMAND_LINE:
            replies.append(b"500 5.5.6 Line too long\r\n")
            self._closing = True
            return False
        line = bytes(buffer[:end]).decode("utf-8", errors="surrogateescape")
        reply = self._command(line)
        # After DATA the CRLF stays: the message data begins with it (see `_take_message`).
        del buffer[: end if self._in_data else end + 2]
        replies.append(reply)
        return True

    # commands -------------------------------------------------------------------------------

    def _command(self, line: str) -> bytes:  # noqa: PLR0911 - one answer per verb
        verb, _, argument = line.partition(" ")
        verb = verb.upper()
        argument = argument.strip()
        if verb == "MAIL":
            return self._mail(argument)
        if verb == "RCPT":
            return self._rcpt(argument)
        if verb == "DATA":
            return self._data(argument)
        if verb == "EHLO" or verb == "HELO":  # noqa: PLR1714 - the verbs read better apart
            if not argument:
                return b"501 5.5.4 Syntax: %s hostname\r\n" % verb.encode()
            self._greeted = True
            self._reset_transaction()
            return self._ehlo_reply if verb == "EHLO" else b"250 %s\r\n" % self._hostname
        if verb == "RSET":
            if argument:
                return b"501 5.5.4 Syntax: RSET\r\n"
            self._reset_transaction()
            return OK
        if verb == "NOOP":
            return OK
        if verb == "QUIT":
            self._closing = True
            return b"221 2.0.0 Bye\r\n"
        return NOT_IMPLEMENTED

    def _mail(self, argument: str) -> bytes:
        if not self._greeted or self._mail_from is not None:
            return BAD_SEQUENCE
        parsed = _path_and_parameters(argument, "FROM:")
        if parsed is None:
            return b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
        path, parameters = parsed
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            key, value = key.upper(), value.upper()
            if key == "SIZE" and value.isdigit():
                if int(value) > self._max_size:
                    return TOO_BIG
            elif not (
                (key == "SMTPUTF8" and not value)
                or (key == "BODY" and value in {"7BIT", "8BITMIME"})
            ):
                return BAD_PARAMETERS
        self._mail_from = path
        return OK

    def _rcpt(self, argument: str) -> bytes:
        if self._mail_from is None:
            return BAD_SEQUENCE
        parsed = _path_and_parameters(argument, "TO:")
        if parsed is None or not parsed[0]:
            return b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
        if parsed[1]:
            return BAD_PARAMETERS
        self._recipients.append(parsed[0])
        return OK

    def _data(self, argument: str) -> bytes:
        if argument:
            return b"501 5.5.4 Syntax: DATA\r\n"
        if not self._recipients:
            return BAD_SEQUENCE
        self._in_data = True
        self._scanned = 0
        self._oversize = False
        return b"354 End data with <CR><LF>.<CR><LF>\r\n"

    def _reset_transaction(self) -> None:
        self._mail_from = None
        self._recipients = []


def _path_and_parameters(argument: str, keyword: str) -> tuple[str, list[str]] | None:
    """`FROM:<a@b> SIZE=10` → ("a@b", ["SIZE=10"]); None when malformed. A space after the
    colon is tolerated (some clients send one)."""
    if argument[: len(keyword)].upper() != keyword:
        return None
    rest = argument[len(keyword) :].lstrip()
    if not rest.startswith("<"):
        return None
    close = rest.find(">")
    if close < 0:
        return None
    return rest[1:close], rest[close + 1 :].split()
