"""The channel provider contract: render (pure), then send (I/O), and for chat, edit in place.

How the delivery loop uses a provider::

    rendered = provider.render(message, destination)        # no I/O; raises only on our bugs
    try:
        receipt = await provider.send(rendered, destination)
    except TransientDeliveryError as exc:    # retry later; not before `exc.retry_after` seconds
    except DestinationConfigError as exc:    # unusable as configured (ours or theirs): dead now
    except PermanentDeliveryError as exc:    # the vendor refused for good: dead, count it
    # store receipt.ref (JSON via `receipt.ref.model_dump()`), later `parse_message_ref(...)`

A provider never retries by itself and never sleeps: retry policy, backoff and rate limits are the
loop's (the error carries the vendor's hint). `DestinationConfigError` is a subclass of
`PermanentDeliveryError`, so a loop that only knows the two outcomes still never retries it.
"""

from __future__ import annotations

import email.utils
import time
from abc import abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar, cast

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from npsloop_shared.errors import NpsloopError

if TYPE_CHECKING:
    from npsloop_alerts.channels.message import AlertMessage


class Channel(StrEnum):
    EMAIL = "email"
    SLACK = "slack"
    TELEGRAM = "telegram"
    WEBHOOK = "webhook"
    CONSOLE = "console"


class DeliveryError(NpsloopError):
    """A send did not happen. `reason` is a short machine-readable code that is safe to log
    (a vendor error code such as `channel_not_found`, or ours such as `timeout`); `detail`
    never contains tokens, message text or recipient addresses."""

    status, title, type_slug = 502, "Bad Gateway", "delivery-failed"

    def __init__(
        self,
        detail: str,
        *,
        reason: str,
        vendor_status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail, headers=headers)
        self.reason = reason
        self.vendor_status = vendor_status


class TransientDeliveryError(DeliveryError):
    """Try again later: rate limited, vendor 5xx, timeout, connection trouble, SMTP 4xx.

    `retry_after` is the vendor's own hint in seconds (Slack `Retry-After`, Telegram
    `parameters.retry_after`); the loop must not retry sooner.
    """

    status, title, type_slug = 503, "Service Unavailable", "delivery-transient"

    def __init__(
        self,
        detail: str,
        *,
        reason: str,
        retry_after: float | None = None,
        vendor_status: int | None = None,
    ) -> None:
        # Surfaced as the HTTP Retry-After if this error ever answers an API request.
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
        super().__init__(detail, reason=reason, vendor_status=vendor_status, headers=headers)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The vendor will never accept this send as it is: chat not found, channel archived, bot
    blocked, webhook revoked, SMTP 5xx. Retrying cannot help; re-drive after someone fixes it."""

    type_slug = "delivery-permanent"


class DestinationConfigError(PermanentDeliveryError):
    """The destination or our own channel settings cannot work: no bot token for a channel,
    a malformed address or URL, our credentials rejected (`invalid_auth`, SMTP 535).

    Raised before any I/O where possible. It says nothing bad about the recipient, so a loop
    that disables destinations after repeated permanent failures should not count it there.
    """

    status, title, type_slug = 422, "Unprocessable Content", "destination-config"


class _Ref(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @property
    def editable(self) -> bool:
        return False

    @property
    @abstractmethod
    def external_id(self) -> str:
        """The vendor's id of the sent message (Message-ID, ts, message_id, webhook-id)."""


class EmailRef(_Ref):
    kind: Literal["email"] = "email"
    message_id: str

    @property
    def external_id(self) -> str:
        return self.message_id


class SlackRef(_Ref):
    """`channel` + `ts` identify a bot-mode message for `chat.update`; webhook posts have none."""

    kind: Literal["slack"] = "slack"
    channel: str | None = None
    ts: str | None = None

    @property
    def editable(self) -> bool:
        return self.channel is not None and self.ts is not None

    @property
    def external_id(self) -> str:
        return f"{self.channel}/{self.ts}" if self.editable else "webhook"


class TelegramRef(_Ref):
    kind: Literal["telegram"] = "telegram"
    chat_id: str
    message_id: int

    @property
    def editable(self) -> bool:
        return True

    @property
    def external_id(self) -> str:
        return f"{self.chat_id}/{self.message_id}"


class WebhookRef(_Ref):
    kind: Literal["webhook"] = "webhook"
    webhook_id: str

    @property
    def external_id(self) -> str:
        return self.webhook_id


class ConsoleRef(_Ref):
    kind: Literal["console"] = "console"
    sequence: int

    @property
    def external_id(self) -> str:
        return f"console/{self.sequence}"


MessageRef = Annotated[
    EmailRef | SlackRef | TelegramRef | WebhookRef | ConsoleRef, Field(discriminator="kind")
]
_MESSAGE_REF: TypeAdapter[MessageRef] = TypeAdapter(MessageRef)


def parse_message_ref(data: Mapping[str, Any]) -> MessageRef:
    """Rebuild a stored `receipt.ref.model_dump()`."""
    return _MESSAGE_REF.validate_python(data)


class SendReceipt(BaseModel):
    """Proof of one accepted send (or edit): what to store to edit or thread later.

    `vendor_status` is the HTTP status or SMTP reply code; `latency_ms` covers the network
    exchange only; `unchanged` is true when an edit found the message already up to date.
    """

    model_config = ConfigDict(frozen=True)

    channel: Channel
    ref: MessageRef
    latency_ms: float
    vendor_status: int | None = None
    edited: bool = False
    unchanged: bool = False


DestinationT_contra = TypeVar("DestinationT_contra", contravariant=True)
RenderedT = TypeVar("RenderedT")


class ChannelProvider(Protocol[DestinationT_contra, RenderedT]):
    """One channel: `render` is pure (safe to call again on retry), `send` does the I/O.

    `locale=None` means the recipient's locale carried by the message.
    """

    @property
    def channel(self) -> Channel: ...

    def render(
        self, message: AlertMessage, destination: DestinationT_contra, locale: str | None = None
    ) -> RenderedT: ...

    async def send(self, rendered: RenderedT, destination: DestinationT_contra) -> SendReceipt: ...


class EditingChannelProvider(ChannelProvider[DestinationT_contra, RenderedT], Protocol):
    """A channel whose sent messages can be edited in place (Slack bot mode, Telegram).

    `edit` takes the `ref` of an earlier receipt; `can_edit(ref)` says whether that ref allows it
    (a Slack webhook post does not: send a new message instead).
    """

    def can_edit(self, ref: MessageRef) -> bool: ...

    async def edit(self, ref: MessageRef, rendered: RenderedT) -> SendReceipt: ...


class Stopwatch:
    """Milliseconds since creation, for receipts."""

    def __init__(self) -> None:
        self._started = time.perf_counter()

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000


class VendorAnswerHeaders(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...


class VendorAnswer(Protocol):
    """What the providers read from an HTTP answer: `httpx.Response` has it, and so has the
    lean client's answer."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> VendorAnswerHeaders: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    vendor: str,
) -> VendorAnswer:
    """POST and turn transport failures into delivery errors.

    Exception text is not copied into the error: httpx messages can contain the URL, and a
    Telegram URL contains the bot token.
    """
    try:
        # `LeanHttpClient` has a lean path for exactly this call (a quarter of the CPU).
        post_bytes = getattr(client, "post_bytes", None)
        if post_bytes is not None:
            return cast(VendorAnswer, await post_bytes(url, content, headers))
        return await client.post(url, content=content, headers=dict(headers))
    except httpx.TimeoutException as exc:
        raise TransientDeliveryError(f"{vendor} did not answer in time", reason="timeout") from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise DestinationConfigError(f"{vendor} URL is not usable", reason="invalid_url") from exc
    except httpx.TransportError as exc:
        raise TransientDeliveryError(
            f"{vendor} connection failed ({type(exc).__name__})", reason="connection_error"
        ) from exc


def retry_after_header(headers: VendorAnswerHeaders) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date (RFC 9110)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def classify_http_status(
    response: VendorAnswer, *, vendor: str, reason: str | None = None
) -> DeliveryError:
    """The error for a non-success HTTP answer: 408/429/5xx transient, other 4xx/3xx permanent."""
    status = response.status_code
    code = reason or f"http_{status}"
    detail = f"{vendor} answered HTTP {status} ({code})"
    if status in {408, 425, 429} or status >= 500:
        return TransientDeliveryError(
            detail,
            reason=code,
            retry_after=retry_after_header(response.headers),
            vendor_status=status,
        )
    return PermanentDeliveryError(detail, reason=code, vendor_status=status)
