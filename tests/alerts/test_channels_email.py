"""Email channel against a real SMTP server (aiosmtpd) listening on a local port."""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from npsloop_alerts.channels import (
    DestinationConfigError,
    EmailDestination,
    EmailIdentity,
    EmailProvider,
    InlineImage,
    PermanentDeliveryError,
    SmtpSettings,
    TransientDeliveryError,
    alert_message_id,
)
from tests.alerts.alerting_support import ScriptedRecipients, parsed_mail
from tests.fakes.samples import ARABIC, CJK, FULL_TEXT_URL, HEBREW, LONG, SCRIPT, alert_message

RECIPIENT = EmailDestination(address="owner@acme.example", name="Owner, Acme")
IDENTITY = EmailIdentity(from_address="alerts@npsloop.example", from_name="npsloop alerts")


@dataclass
class RecordingHandler(ScriptedRecipients):
    """aiosmtpd handler: keeps every accepted message; `refuse` scripts RCPT replies."""

    envelopes: list[Envelope] = field(default_factory=list)
    connections: int = 0

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def parsed(self, index: int = -1) -> EmailMessage:
        return parsed_mail(self.envelopes[index])


@dataclass
class SmtpServer:
    handler: RecordingHandler
    port: int


async def _serve(handler: RecordingHandler, **smtp_options: Any) -> tuple[asyncio.Server, int]:
    def protocol() -> SMTP:
        handler.connections += 1
        return SMTP(handler, hostname="mx.test", **smtp_options)

    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    handler = RecordingHandler()
    server, port = await _serve(handler)
    yield SmtpServer(handler, port)
    server.close()
    await server.wait_closed()


@pytest.fixture
async def provider(smtp: SmtpServer) -> AsyncIterator[EmailProvider]:
    email_provider = EmailProvider(SmtpSettings.from_url(f"smtp://127.0.0.1:{smtp.port}"), IDENTITY)
    yield email_provider
    await email_provider.aclose()


def _tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _parts(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert isinstance(plain, EmailMessage)
    assert isinstance(html, EmailMessage)
    # Mail travels with CRLF line ends; compare with the LF text we rendered.
    return _lf(plain.get_content()), _lf(html.get_content())


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


async def test_email_is_multipart_alternative_text_first_then_html(
    smtp: SmtpServer, provider: EmailProvider
) -> None:
    message = alert_message()
    receipt = await provider.send(provider.render(message, RECIPIENT), RECIPIENT)

    envelope = smtp.handler.envelopes[-1]
    assert envelope.mail_from == IDENTITY.from_address
    assert envelope.rcpt_tos == [RECIPIENT.address]
    parsed = smtp.handler.parsed()
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == ["text/plain", "text/html"]
    expected_id = alert_message_id("a-1", RECIPIENT.address, "npsloop.example")
    assert parsed["Message-ID"] == expected_id
    assert receipt.ref.external_id == expected_id
    assert receipt.vendor_status == 250
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Content-Language"] == "en"
    assert parsed["Subject"] == "[NPS] Detractor 3/10 from Acme Retail"
    assert parsed["To"] == '"Owner, Acme" <owner@acme.example>'
    assert parsed["From"] == "npsloop alerts <alerts@npsloop.example>"
    assert parsed["Date"] is not None


async def test_email_shows_every_fact_in_text_and_html(
    smtp: SmtpServer, provider: EmailProvider
) -> None:
    await provider.send(provider.render(alert_message(), RECIPIENT), RECIPIENT)
    text, html = _parts(smtp.handler.parsed())
    for body in (text, html):
        assert "Detractor · 3/10" in body
        assert "Acme Retail (retail)" in body
        assert "checkout · Transactional" in body
        assert "Maria Souza · maria@example.com" in body
        # 19:30 UTC is 14:30 in New York (EST, before the March 8 DST change).
        assert "Mar 2, 2026, 2:30\u202fPM EST" in body
        assert "https://npsloop.test/a/a-1/ack?sig=1" in body
    assert "Checkout kept failing & support never answered." in text
    assert "Checkout kept failing &amp; support never answered." in html


async def test_html_has_inlined_css_and_no_style_block(
    smtp: SmtpServer, provider: EmailProvider
) -> None:
    await provider.send(provider.render(alert_message(), RECIPIENT), RECIPIENT)
    _, html = _parts(smtp.handler.parsed())
    assert "<style" not in html
    assert 'class="comment" dir="auto" style="' in html
    assert "background: #cf222e" in html


async def test_message_id_is_the_same_for_every_attempt_and_differs_per_recipient(
    provider: EmailProvider,
) -> None:
    message = alert_message()
    first = provider.render(message, RECIPIENT)
    again = provider.render(message.model_copy(update={"revision": 3}), RECIPIENT)
    other = provider.render(message, EmailDestination(address="backup@acme.example"))
    assert first.message_id == again.message_id
    assert first.message_id != other.message_id
    assert "owner" not in first.message_id


async def test_hostile_comment_is_inert_in_html_and_literal_in_text(
    smtp: SmtpServer, provider: EmailProvider
) -> None:
    comment = f"{SCRIPT}\n<!channel> <b>x</b> &amp;\n{ARABIC}\n{HEBREW}\n{CJK}"
    hostile = alert_message(comment=comment, account_name="<i>Evil</i> & Co")
    await provider.send(provider.render(hostile, RECIPIENT), RECIPIENT)
    parsed = smtp.handler.parsed()
    text, html = _parts(parsed)
    assert "<script" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in html
    assert "&lt;b&gt;x&lt;/b&gt; &amp;amp;" in html
    assert "&lt;i&gt;Evil&lt;/i&gt; &amp; Co" in html
    assert comment in text
    for script in (ARABIC, HEBREW, CJK):
        assert script in html
    assert parsed["Subject"] == "[NPS] Detractor 3/10 from <i>Evil</i> & Co"


async def test_ten_thousand_characters_are_cut_with_a_link_to_the_full_text(
    smtp: SmtpServer, provider: EmailProvider
) -> None:
    await provider.send(provider.render(alert_message(comment=LONG), RECIPIENT), RECIPIENT)
    text, html = _parts(smtp.handler.parsed())
    assert LONG not in text
    assert LONG[:2_900] in text
    assert f"Read the full comment: {FULL_TEXT_URL}" in text
    assert 'href="https://npsloop.test/alerts/a-1/comment?sig=abc&amp;exp=1"' in html
    assert len(text) < 4_000


@pytest.mark.parametrize(
    ("locale", "subject", "phrases"),
    [
        (
            "pt-BR",
            "[NPS] Detrator 3/10 de Acme Retail",
            ["Prazo do SLA", "2 de mar. de 2026 16:30 BRT", "Confirmar recebimento", "Comentário"],
        ),
        (
            "zh-CN",
            "[NPS] Acme Retail 的贬损者评分 3/10",
            ["SLA 截止时间", "2026年3月3日 03:30", "确认", "受访者"],
        ),
    ],
)
async def test_email_is_in_the_recipients_locale_and_timezone(
    smtp: SmtpServer, provider: EmailProvider, locale: str, subject: str, phrases: list[str]
) -> None:
    timezone = "America/Sao_Paulo" if locale == "pt-BR" else "Asia/Shanghai"
    message = alert_message(locale=locale, timezone=timezone)
    await provider.send(provider.render(message, RECIPIENT), RECIPIENT)
    parsed = smtp.handler.parsed()
    text, html = _parts(parsed)
    assert parsed["Subject"] == subject
    assert parsed["Content-Language"] == locale
    assert f'lang="{locale}"' in html
    for phrase in phrases:
        assert phrase in text
        assert phrase in html


async def test_inline_logo_goes_in_multipart_related_with_the_html(smtp: SmtpServer) -> None:
    logo = InlineImage(content_id="logo@npsloop.example", data=_tiny_png())
    identity = EmailIdentity(from_address="alerts@npsloop.example", logo=logo)
    with_logo = EmailProvider(SmtpSettings.from_url(f"smtp://127.0.0.1:{smtp.port}"), identity)
    try:
        await with_logo.send(with_logo.render(alert_message(), RECIPIENT), RECIPIENT)
    finally:
        await with_logo.aclose()
    parsed = smtp.handler.parsed()
    plain, related = list(parsed.iter_parts())
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, image = list(related.iter_parts())
    assert html.get_content_type() == "text/html"
    assert 'src="cid:logo@npsloop.example"' in html.get_content()
    assert image["Content-ID"] == "<logo@npsloop.example>"
    assert image.get_content() == logo.data


async def test_connections_are_reused_across_sends(
    smtp: SmtpServer, provider: EmailProvider
) -> None:
    message = alert_message()
    for _ in range(3):
        await provider.send(provider.render(message, RECIPIENT), RECIPIENT)
    assert len(smtp.handler.envelopes) == 3
    assert smtp.handler.connections == 1


async def test_4xx_recipient_reply_is_transient(smtp: SmtpServer, provider: EmailProvider) -> None:
    smtp.handler.refuse[RECIPIENT.address] = "450 4.2.1 Mailbox busy, try later"
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(provider.render(alert_message(), RECIPIENT), RECIPIENT)
    assert caught.value.vendor_status == 450
    assert caught.value.reason == "smtp_450"


async def test_5xx_recipient_reply_is_permanent(smtp: SmtpServer, provider: EmailProvider) -> None:
    smtp.handler.refuse[RECIPIENT.address] = "550 5.1.1 No such user"
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.send(provider.render(alert_message(), RECIPIENT), RECIPIENT)
    assert caught.value.vendor_status == 550
    assert not isinstance(caught.value, DestinationConfigError)


async def test_a_failed_send_does_not_poison_the_pool(
    smtp: SmtpServer, provider: EmailProvider
) -> None:
    smtp.handler.refuse[RECIPIENT.address] = "451 4.3.0 Temporary failure"
    with pytest.raises(TransientDeliveryError):
        await provider.send(provider.render(alert_message(), RECIPIENT), RECIPIENT)
    del smtp.handler.refuse[RECIPIENT.address]
    receipt = await provider.send(provider.render(alert_message(), RECIPIENT), RECIPIENT)
    assert receipt.vendor_status == 250


async def test_unreachable_server_is_transient() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]
    unreachable = EmailProvider(
        SmtpSettings.from_url(f"smtp://127.0.0.1:{closed_port}", timeout=2), IDENTITY
    )
    with pytest.raises(TransientDeliveryError) as caught:
        await unreachable.send(unreachable.render(alert_message(), RECIPIENT), RECIPIENT)
    assert caught.value.reason == "connection_error"


async def test_rejected_credentials_are_a_config_error() -> None:
    def deny(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        return AuthResult(success=False, handled=False)

    handler = RecordingHandler()
    server, port = await _serve(handler, authenticator=deny, auth_require_tls=False)
    provider = EmailProvider(
        SmtpSettings.from_url(f"smtp://mailer:wrong%40pass@127.0.0.1:{port}"), IDENTITY
    )
    try:
        with pytest.raises(DestinationConfigError) as caught:
            await provider.send(provider.render(alert_message(), RECIPIENT), RECIPIENT)
    finally:
        await provider.aclose()
        server.close()
        await server.wait_closed()
    assert caught.value.reason == "smtp_auth_failed"
    assert "wrong" not in str(caught.value)
    assert handler.envelopes == []


async def test_invalid_address_is_a_config_error(provider: EmailProvider) -> None:
    broken = EmailDestination(address="owner@acme.example\r\nBcc: all@evil.example")
    with pytest.raises(DestinationConfigError):
        await provider.send(provider.render(alert_message(), broken), broken)


def test_smtp_url_parsing() -> None:
    plain = SmtpSettings.from_url("smtp://mail.example:2525")
    assert (plain.host, plain.port, plain.use_tls, plain.start_tls) == (
        "mail.example",
        2525,
        False,
        None,
    )
    secured = SmtpSettings.from_url("smtp://u%40x:p%3Aw@mail.example:587?starttls=true")
    assert secured.username == "u@x"
    assert secured.password is not None
    assert secured.password.get_secret_value() == "p:w"
    assert secured.start_tls is True
    assert "p:w" not in repr(secured)
    implicit = SmtpSettings.from_url("smtps://mail.example")
    assert (implicit.port, implicit.use_tls, implicit.start_tls) == (465, True, None)
    assert SmtpSettings.from_url("smtp://mail.example?starttls=false").start_tls is False
    with pytest.raises(ValueError, match="SMTP URL"):
        SmtpSettings.from_url("http://mail.example")
