"""Email alerts over SMTP (`aiosmtplib`): multipart/alternative, text first, then HTML.

Idempotency: the `Message-ID` is derived from (alert id, recipient address), so a retried send
after an ambiguous failure carries the same id and mail clients and archives recognise it as the
same message. The provider keeps a small pool of SMTP connections and never retries by itself:
a 4xx reply or a broken connection is a `TransientDeliveryError`, a 5xx reply a
`PermanentDeliveryError`, rejected credentials a `DestinationConfigError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import format_datetime, formataddr
from functools import cache, lru_cache
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import css_inline
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import SecretStr

from npsloop_alerts.channels.base import (
    Channel,
    DestinationConfigError,
    EmailRef,
    MessageRef,
    PermanentDeliveryError,
    SendReceipt,
    Stopwatch,
    TransientDeliveryError,
)
from npsloop_alerts.channels.escaping import plain_text, single_line, truncate
from npsloop_alerts.channels.i18n import bcp47, translations
from npsloop_alerts.channels.message import AlertMessage, InlineImage, RenderedEmail
from npsloop_alerts.channels.mime import alert_email
from npsloop_alerts.channels.presentation import AlertPresentation, present

EMAIL_COMMENT_CHARS: Final = 3_000
SUBJECT_CHARS: Final = 200
_TRUE: Final = frozenset({"1", "true", "yes", "on", "require", "required"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
# A pooled connection idle longer than this is checked with NOOP before use: servers drop idle
# clients, and finding out during DATA would turn a healthy send into a retry.
_IDLE_PROBE_AFTER_S: Final = 5.0
_CSS_INLINER: Final = css_inline.CSSInliner(load_remote_stylesheets=False)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to submit mail, usually parsed from `NPSLOOP_SMTP_URL`."""

    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    use_tls: bool = False  # implicit TLS (smtps://, port 465)
    start_tls: bool | None = None  # None: STARTTLS when the server offers it
    timeout: float = 10.0
    # PEM CA bundle that verifies the server's certificate instead of the system's trust store
    # (a private CA). Verification itself (chain and host name) is never switched off.
    ca_file: str | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 10.0) -> SmtpSettings:
        """`smtp://[user:password@]host[:port][?starttls=true|false][&cafile=/path/ca.pem]` or
        `smtps://…[?cafile=…]`.

        `starttls` absent means opportunistic STARTTLS; user and password are percent-decoded.
        `cafile` replaces the system's trusted CAs for this server (like libpq's `sslrootcert`).
        """
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("SMTP URL must look like smtp://host:port or smtps://host:port")
        implicit_tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=SecretStr(unquote(parts.password)) if parts.password else None,
            use_tls=implicit_tls,
            start_tls=None if implicit_tls else _start_tls_option(parts.query),
            timeout=timeout,
            ca_file=_ca_file_option(parts.query),
        )


def _start_tls_option(query: str) -> bool | None:
    values = parse_qs(query).get("starttls")
    if not values:
        return None
    value = values[-1].lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"starttls must be true or false, not {value!r}")


def _ca_file_option(query: str) -> str | None:
    values = parse_qs(query).get("cafile")
    return values[-1] if values else None


@dataclass(frozen=True, slots=True)
class EmailIdentity:
    """Who the mail is from; `message_id_domain` defaults to the sender's domain."""

    from_address: str
    from_name: str = "npsloop"
    message_id_domain: str | None = None
    logo: InlineImage | None = None  # shown at the top of the HTML when set

    @property
    def id_domain(self) -> str:
        return self.message_id_domain or self.from_address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class EmailDestination:
    address: str
    name: str | None = None


def alert_message_id(alert_id: str, address: str, domain: str) -> str:
    """`<alert-{id}.{recipient}@{domain}>`: the same for every attempt to the same recipient.

    The recipient part is a hash of the lower-cased address, which keeps the id a valid
    dot-atom and keeps the address itself out of the header.
    """
    recipient = hashlib.sha256(address.strip().lower().encode()).hexdigest()[:16]
    return f"<alert-{alert_id}.{recipient}@{domain}>"


@cache
def _environment(locale: str) -> Environment:
    environment = Environment(
        loader=PackageLoader("npsloop_alerts.channels", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Templates ship inside the package: no need to stat their files on every render.
        auto_reload=False,
    )
    environment.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return environment


def render_email(
    message: AlertMessage,
    destination: EmailDestination,
    identity: EmailIdentity,
    locale: str | None = None,
) -> RenderedEmail:
    """Subject, text and CSS-inlined HTML for one recipient. Pure: no I/O, no clock."""
    presentation = present(message, locale)
    comment, truncated = _email_comment(presentation)
    context = {
        "p": presentation,
        "comment": comment,
        "truncated": truncated,
        "bucket": message.bucket.value,
        "lang": bcp47(presentation.locale),
        "logo_cid": identity.logo.content_id if identity.logo else None,
        "page": False,
    }
    environment = _environment(presentation.locale)
    html = environment.get_template("email/alert.html.j2").render(context)
    text = environment.get_template("email/alert.txt.j2").render(context)
    return RenderedEmail(
        subject=truncate(single_line(presentation.subject), SUBJECT_CHARS)[0],
        text=text,
        html=_CSS_INLINER.inline(html),
        message_id=alert_message_id(message.alert_id, destination.address, identity.id_domain),
        locale=bcp47(presentation.locale),
        inline_images=(identity.logo,) if identity.logo else (),
    )


def render_alert_page(message: AlertMessage) -> str:
    """The alert as a web page (the target of "read the whole comment"): the email's HTML with
    the comment in full, in the reader's `message.locale`."""
    presentation = present(message)
    return (
        _environment(presentation.locale)
        .get_template("email/alert.html.j2")
        .render(
            {
                "p": presentation,
                "comment": presentation.comment,
                "truncated": False,
                "bucket": message.bucket.value,
                "lang": bcp47(presentation.locale),
                "logo_cid": None,
                "page": True,
            }
        )
    )


def _email_comment(presentation: AlertPresentation) -> tuple[str | None, bool]:
    if presentation.comment is None:
        return None, False
    return truncate(plain_text(presentation.comment), EMAIL_COMMENT_CHARS)


def build_mime(
    rendered: RenderedEmail, destination: EmailDestination, identity: EmailIdentity
) -> bytes:
    """The message as SMTP sends it: multipart/alternative, text/plain then text/html (inside
    multipart/related when the HTML shows inline images); see `mime.py`."""
    return alert_email(
        subject=rendered.subject,
        headers=[
            ("From", formataddr((identity.from_name, identity.from_address), charset="utf-8")),
            ("To", _recipient(destination.name, destination.address)),
            ("Message-ID", rendered.message_id),
            ("Date", format_datetime(_utc_now())),
            ("Auto-Submitted", "auto-generated"),
            # Ask Exchange/Outlook not to answer with out-of-office or read receipts.
            ("X-Auto-Response-Suppress", "All"),
            ("Content-Language", rendered.locale),
        ],
        text=rendered.text,
        html=rendered.html,
        inline_images=rendered.inline_images,
    )


@lru_cache(maxsize=4096)  # recipients repeat; checking an address costs tens of microseconds
def _recipient(name: str | None, address: str) -> str:
    """The To header value, once the address is known to be a valid addr-spec."""
    display_name = single_line(name) if name else ""
    try:
        Address(display_name=display_name, addr_spec=address)
    except (HeaderParseError, ValueError, IndexError) as exc:
        raise DestinationConfigError(
            "email address is not valid", reason="invalid_address"
        ) from exc
    return formataddr((display_name, address), charset="utf-8")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _PooledClient:
    client: aiosmtplib.SMTP
    last_used: float = field(default_factory=time.monotonic)


class _SmtpPool:
    """At most `size` concurrent SMTP sessions; idle sessions are reused (one per send is slow)."""

    def __init__(self, settings: SmtpSettings, size: int) -> None:
        self._settings = settings
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_PooledClient] = []

    @asynccontextmanager
    async def session(self) -> AsyncIterator[aiosmtplib.SMTP]:
        async with self._slots:
            pooled = await self._take_healthy() or _PooledClient(await self._connect())
            try:
                yield pooled.client
            except BaseException:
                pooled.client.close()
                raise
            pooled.last_used = time.monotonic()
            self._idle.append(pooled)

    async def _take_healthy(self) -> _PooledClient | None:
        while self._idle:
            pooled = self._idle.pop()
            if await _still_usable(pooled):
                return pooled
            pooled.client.close()
        return None

    async def _connect(self) -> aiosmtplib.SMTP:
        """A logged-in session. TLS (implicit or STARTTLS) always verifies the certificate chain
        and host name; a certificate we cannot trust is our configuration (or someone in the
        middle), so it is a `DestinationConfigError` and nothing is sent in clear text."""
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            use_tls=settings.use_tls,
            start_tls=settings.start_tls,
            timeout=settings.timeout,
            tls_context=await _tls_context(settings.ca_file) if settings.ca_file else None,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            verification = _certificate_failure(exc)
            if verification is None:
                raise
            raise DestinationConfigError(
                f"SMTP server certificate not trusted ({verification.verify_message})",
                reason="smtp_tls_untrusted",
            ) from exc
        return client

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for pooled in idle:
            try:
                await pooled.client.quit()
            except (aiosmtplib.SMTPException, OSError):
                pooled.client.close()


async def _tls_context(ca_file: str) -> ssl.SSLContext:
    """Server verification against `ca_file` only (loaded off the loop: it reads a file)."""
    try:
        return await asyncio.to_thread(ssl.create_default_context, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise DestinationConfigError(
            f"SMTP CA file cannot be loaded ({type(exc).__name__})", reason="smtp_ca_file"
        ) from exc


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind `exc` (aiosmtplib wraps the one raised
    during an implicit-TLS connect in `SMTPConnectError`; STARTTLS raises it bare)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:  # a chain can loop back on itself
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        chain.append(current)
        current = current.__cause__ or current.__context__
    return None


async def _still_usable(pooled: _PooledClient) -> bool:
    if not pooled.client.is_connected:
        return False
    if time.monotonic() - pooled.last_used < _IDLE_PROBE_AFTER_S:
        return True
    try:
        await pooled.client.noop()
    except (aiosmtplib.SMTPException, OSError):
        return False
    return True


class EmailProvider:
    """`ChannelProvider[EmailDestination, RenderedEmail]`. Call `aclose()` on shutdown."""

    channel: Final = Channel.EMAIL

    def __init__(
        self, settings: SmtpSettings, identity: EmailIdentity, *, pool_size: int = 4
    ) -> None:
        self._identity = identity
        self._pool = _SmtpPool(settings, pool_size)

    def render(
        self, message: AlertMessage, destination: EmailDestination, locale: str | None = None
    ) -> RenderedEmail:
        return render_email(message, destination, self._identity, locale)

    async def send(self, rendered: RenderedEmail, destination: EmailDestination) -> SendReceipt:
        mime = build_mime(rendered, destination, self._identity)
        watch = Stopwatch()
        try:
            async with self._pool.session() as client:
                responses, _ = await client.sendmail(
                    self._identity.from_address,
                    [destination.address],
                    mime,
                    # An internationalized mailbox needs the server's SMTPUTF8 (RFC 6531).
                    mail_options=[] if destination.address.isascii() else ["SMTPUTF8"],
                )
        except aiosmtplib.SMTPException as exc:
            raise classify_smtp_error(exc) from exc
        except OSError as exc:
            raise TransientDeliveryError(
                f"SMTP connection failed ({type(exc).__name__})", reason="connection_error"
            ) from exc
        accepted = next(iter(responses.values()), None)
        return SendReceipt(
            channel=Channel.EMAIL,
            ref=EmailRef(message_id=rendered.message_id),
            latency_ms=watch.elapsed_ms,
            vendor_status=accepted.code if accepted else 250,
        )

    def can_edit(self, ref: MessageRef) -> bool:
        return False  # mail cannot be recalled; a later revision is a new delivery decision

    async def aclose(self) -> None:
        await self._pool.aclose()


def classify_smtp_error(
    exc: aiosmtplib.SMTPException,
) -> TransientDeliveryError | PermanentDeliveryError:
    """4xx and broken connections: transient. 5xx: permanent. Rejected login: our config."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return DestinationConfigError(
            f"SMTP server rejected our credentials ({exc.code})",
            reason="smtp_auth_failed",
            vendor_status=exc.code,
        )
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in exc.recipients]
        return _by_reply_code(max(codes) if codes else 550, "recipient refused")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_reply_code(exc.code, "SMTP server refused the message")
    return TransientDeliveryError(
        f"SMTP exchange failed ({type(exc).__name__})", reason="connection_error"
    )


def _by_reply_code(code: int, what: str) -> TransientDeliveryError | PermanentDeliveryError:
    detail = f"{what} ({code})"
    if 400 <= code < 500:
        return TransientDeliveryError(detail, reason=f"smtp_{code}", vendor_status=code)
    return PermanentDeliveryError(detail, reason=f"smtp_{code}", vendor_status=code)
