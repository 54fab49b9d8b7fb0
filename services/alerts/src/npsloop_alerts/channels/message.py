"""What an alert message shows (`AlertMessage`) and what each channel renders it into.

`AlertMessage` is the channel-neutral view the delivery loop builds from an alert, its account,
the response and the recipient. Renderers turn it into a `Rendered*` value without any I/O;
providers send that value. Keeping the two apart lets the loop render once, store or log what
would be sent, and retry the send alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Final, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from npsloop_shared.contracts import Bucket, Respondent, ResponseKind, bucket_for

MAX_CALLBACK_KEY_BYTES: Final = 64  # Telegram's `callback_data` limit, in bytes


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    if any(char.isspace() or ord(char) < 0x20 for char in value):
        raise ValueError("must not contain whitespace or control characters")
    return value


def _known_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {value!r}") from exc
    return value


def _short_callback_key(value: str) -> str:
    if len(value.encode()) > MAX_CALLBACK_KEY_BYTES:
        raise ValueError(f"callback keys are at most {MAX_CALLBACK_KEY_BYTES} bytes")
    return value


HttpUrlText = Annotated[str, Field(max_length=3_000), AfterValidator(_http_url)]
# Used inside Message-IDs and webhook ids, so it must be a plain token.
AlertId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


class ActionKind(StrEnum):
    """What an action link does; each kind has a translated button label."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    APPROVE = "approve"


class ActionLink(BaseModel):
    """A signed link the recipient can follow (email, Slack button) or press (Telegram button).

    `callback_key` is the short server-side key a Telegram button carries as `callback_data`
    (1-64 bytes; the rest lives in our database). Without it, Telegram shows a URL button.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ActionKind
    url: HttpUrlText
    callback_key: (
        Annotated[
            str,
            Field(min_length=1, pattern=r"^[A-Za-z0-9_:.-]+$"),
            AfterValidator(_short_callback_key),
        ]
        | None
    ) = None


class AlertMessage(BaseModel):
    """Everything any channel shows about one alert, for one recipient.

    Untrusted text (`comment`, `account_name`, `account_segment`, `touchpoint`, the respondent)
    is kept raw here; each renderer escapes it for its medium and truncates it to its limits,
    linking to `full_text_url` when it had to cut the comment. Times are shown in the recipient's
    `timezone`, words in the recipient's `locale` (`en`, `pt-BR`, `zh-CN`; others fall back).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_id: AlertId
    revision: Annotated[int, Field(ge=0)]
    bucket: Bucket
    score: Annotated[int, Field(ge=0, le=10)]
    comment: str | None
    account_id: Annotated[str, Field(min_length=1, max_length=128)]
    account_name: Annotated[str, Field(min_length=1, max_length=512)]
    account_segment: Annotated[str, Field(max_length=128)] | None = None
    touchpoint: Annotated[str, Field(max_length=128)] | None
    kind: ResponseKind
    respondent: Respondent | None = None
    submitted_at: AwareDatetime
    sla_deadline: AwareDatetime | None
    full_text_url: HttpUrlText | None = None
    actions: tuple[ActionLink, ...] = ()
    locale: Annotated[str, Field(min_length=2, max_length=35)] = "en"
    timezone: Annotated[str, AfterValidator(_known_timezone)] = "UTC"

    @model_validator(mode="after")
    def _bucket_matches_score(self) -> Self:
        if bucket_for(self.score) is not self.bucket:
            raise ValueError(f"score {self.score} is a {bucket_for(self.score)}, not {self.bucket}")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class InlineImage:
    """An image in the HTML (`<img src="cid:{content_id}">`), sent inside multipart/related."""

    content_id: str  # without angle brackets, e.g. "logo@npsloop.dev"
    data: bytes
    subtype: str = "png"  # image/<subtype>
    filename: str = "logo.png"


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """A complete email except the envelope and `Date`, which belong to the send."""

    subject: str
    text: str
    html: str
    message_id: str  # with angle brackets, deterministic per (alert, recipient)
    locale: str  # BCP 47 tag for Content-Language
    inline_images: tuple[InlineImage, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderedSlack:
    """A Slack message: `text` is the notification fallback, `blocks` the Block Kit layout.

    Both are already escaped for mrkdwn; the same value is posted to a webhook or `chat.*`.
    """

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RenderedTelegram:
    """A Telegram message in HTML parse mode and its inline keyboard (or `None`)."""

    html: str
    visible_length: int  # UTF-16 code units after entity parsing; at most 4,096
    reply_markup: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RenderedWebhook:
    """The signed-webhook body; the signature is made at send time (it includes a timestamp)."""

    body: bytes
    webhook_id: str  # deterministic per (alert, revision, recipient): receivers dedupe on it
    event_type: str


@dataclass(frozen=True, slots=True)
class RenderedConsole:
    """A readable, terminal-safe summary."""

    text: str
