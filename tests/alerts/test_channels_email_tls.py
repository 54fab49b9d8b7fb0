"""Email over TLS against a real aiosmtpd server with certificates from a throwaway CA (trustme).

Implicit TLS (`smtps://`) and STARTTLS (`?starttls=true`, and opportunistic when absent) deliver
only after verifying the server's certificate against `cafile`; a certificate we cannot trust
fails the send as our configuration, and the message never travels in clear text.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme
from aiosmtpd.smtp import SMTP, Envelope, Session

from npsloop_alerts.channels import (
    DestinationConfigError,
    EmailDestination,
    EmailIdentity,
    EmailProvider,
    EmailRef,
    SendReceipt,
    SmtpSettings,
    TransientDeliveryError,
)
from tests.alerts.alerting_support import parsed_mail
from tests.fakes.samples import alert_message

HOST = "127.0.0.1"
RECIPIENT = EmailDestination(address="owner@acme.example", name="Owner, Acme")
IDENTITY = EmailIdentity(from_address="alerts@npsloop.example", from_name="npsloop alerts")


@dataclass
class Mailbox:
    """aiosmtpd handler: every accepted message, and whether its session was encrypted."""

    messages: list[EmailMessage] = field(default_factory=list)
    encrypted: list[bool] = field(default_factory=list)
    mail_from_seen: int = 0

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        self.mail_from_seen += 1
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.messages.append(parsed_mail(envelope))
        assert server.transport is not None
        # The TLS object of the transport the message came over (implicit TLS or STARTTLS).
        self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class Pki:
    """A CA the client trusts (its PEM at `ca_file`) and one it does not."""

    trusted: trustme.CA
    untrusted: trustme.CA
    ca_file: Path

    def server_context(self, *, ca: trustme.CA | None = None, name: str = HOST) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (ca or self.trusted).issue_cert(name).configure_cert(context)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    trusted = trustme.CA()
    ca_file = tmp_path_factory.mktemp("smtp-tls") / "ca.pem"
    trusted.cert_pem.write_to_path(str(ca_file))
    return Pki(trusted=trusted, untrusted=trustme.CA(), ca_file=ca_file)


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an aiosmtpd server on a free port; `implicit_tls=` wraps the socket in TLS from
    the first byte, `starttls=` offers STARTTLS with that context (`require=` refuses mail
    before it)."""
    servers: list[asyncio.Server] = []

    async def start(
        mailbox: Mailbox,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        starttls: ssl.SSLContext | None = None,
        require: bool = False,
    ) -> int:
        def protocol() -> SMTP:
            return SMTP(mailbox, hostname="mx.test", tls_context=starttls, require_starttls=require)

        server = await asyncio.get_running_loop().create_server(protocol, HOST, 0, ssl=implicit_tls)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _send(url: str) -> SendReceipt:
    provider = EmailProvider(SmtpSettings.from_url(url, timeout=5.0), IDENTITY)
    try:
        message = alert_message(comment="Checkout kept failing over TLS.")
        return await provider.send(provider.render(message, RECIPIENT), RECIPIENT)
    finally:
        await provider.aclose()


def _assert_delivered(mailbox: Mailbox, receipt: SendReceipt) -> None:
    [message] = mailbox.messages
    assert mailbox.encrypted == [True]
    assert isinstance(receipt.ref, EmailRef)
    assert message["Message-ID"] == receipt.ref.message_id
    assert "owner@acme.example" in message["To"]
    plain = message.get_body(preferencelist=("plain",))
    assert isinstance(plain, EmailMessage)
    assert "Checkout kept failing over TLS." in plain.get_content()


async def test_implicit_tls_delivers_after_verifying_the_certificate(
    pki: Pki, serve: Serve
) -> None:
    mailbox = Mailbox()
    port = await serve(mailbox, implicit_tls=pki.server_context())

    receipt = await _send(f"smtps://{HOST}:{port}?cafile={pki.ca_file}")

    _assert_delivered(mailbox, receipt)
    assert receipt.vendor_status == 250


@pytest.mark.parametrize("starttls", ["?starttls=true&", "?"], ids=["required", "opportunistic"])
async def test_starttls_delivers_after_verifying_the_certificate(
    pki: Pki, serve: Serve, starttls: str
) -> None:
    mailbox = Mailbox()
    port = await serve(mailbox, starttls=pki.server_context(), require=True)

    receipt = await _send(f"smtp://{HOST}:{port}{starttls}cafile={pki.ca_file}")

    _assert_delivered(mailbox, receipt)


@pytest.mark.parametrize("issuer", ["unknown_ca", "wrong_host_name"])
async def test_implicit_tls_with_an_untrusted_certificate_is_a_configuration_error(
    pki: Pki, serve: Serve, issuer: str
) -> None:
    context = (
        pki.server_context(ca=pki.untrusted)
        if issuer == "unknown_ca"
        else pki.server_context(name="mx.elsewhere.test")
    )
    mailbox = Mailbox()
    port = await serve(mailbox, implicit_tls=context)

    with pytest.raises(DestinationConfigError) as caught:
        await _send(f"smtps://{HOST}:{port}?cafile={pki.ca_file}")

    assert caught.value.reason == "smtp_tls_untrusted"
    assert "certificate" in str(caught.value)
    assert mailbox.mail_from_seen == 0
    assert mailbox.messages == []


@pytest.mark.parametrize("starttls", ["?starttls=true&", "?"], ids=["required", "opportunistic"])
async def test_starttls_with_an_untrusted_certificate_never_falls_back_to_clear_text(
    pki: Pki, serve: Serve, starttls: str
) -> None:
    # The server would take mail in clear text too: only the client can refuse to send it.
    mailbox = Mailbox()
    port = await serve(mailbox, starttls=pki.server_context(ca=pki.untrusted), require=False)

    with pytest.raises(DestinationConfigError) as caught:
        await _send(f"smtp://{HOST}:{port}{starttls}cafile={pki.ca_file}")

    assert caught.value.reason == "smtp_tls_untrusted"
    assert mailbox.mail_from_seen == 0
    assert mailbox.messages == []


async def test_system_trust_store_does_not_trust_a_private_ca(pki: Pki, serve: Serve) -> None:
    mailbox = Mailbox()
    port = await serve(mailbox, implicit_tls=pki.server_context())

    with pytest.raises(DestinationConfigError) as caught:
        await _send(f"smtps://{HOST}:{port}")

    assert caught.value.reason == "smtp_tls_untrusted"
    assert mailbox.messages == []


async def test_required_starttls_against_a_server_without_it_sends_nothing(
    pki: Pki, serve: Serve
) -> None:
    mailbox = Mailbox()
    port = await serve(mailbox)  # plain SMTP, no STARTTLS offered

    with pytest.raises(TransientDeliveryError):
        await _send(f"smtp://{HOST}:{port}?starttls=true&cafile={pki.ca_file}")

    assert mailbox.mail_from_seen == 0
    assert mailbox.messages == []


async def test_missing_ca_file_is_a_configuration_error(
    serve: Serve, tmp_path: Path, pki: Pki
) -> None:
    mailbox = Mailbox()
    port = await serve(mailbox, implicit_tls=pki.server_context())

    with pytest.raises(DestinationConfigError) as caught:
        await _send(f"smtps://{HOST}:{port}?cafile={tmp_path / 'absent.pem'}")

    assert caught.value.reason == "smtp_ca_file"
    assert mailbox.messages == []


def test_cafile_is_read_from_the_smtp_url(tmp_path: Path) -> None:
    ca_file = tmp_path / "corp ca.pem"
    settings = SmtpSettings.from_url(f"smtps://mail.example:465?cafile={ca_file}")
    assert settings.ca_file == str(ca_file)
    assert settings.use_tls is True
    assert SmtpSettings.from_url("smtp://mail.example?starttls=true").ca_file is None
