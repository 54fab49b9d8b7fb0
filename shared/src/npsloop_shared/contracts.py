"""Event contracts carried on Kafka. Changing a field's meaning or type means a new `.v2` topic.

The JSON Schema of each event is snapshot-tested (tests/shared/snapshots); adding an optional
field updates the snapshot, anything else must not.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

RESPONSES_TOPIC: Final = "npsloop.responses.v1"
ACCOUNTS_TOPIC: Final = "npsloop.accounts.v1"
ALERTS_TOPIC: Final = "npsloop.alerts.v1"
RESPONSE_RECEIVED_TYPE: Final = "io.npsloop.response.received.v1"

# Fixed namespace so every replica (and every redelivered webhook) derives the same ce_id.
CE_ID_NAMESPACE: Final = uuid.UUID("6f1d8a52-3c3e-4d6b-9a51-9f2f5d1c0b7e")

MAX_COMMENT_CHARS: Final = 5_000
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_VALUE_CHARS: Final = 256
MAX_ATTRIBUTE_KEY_CHARS: Final = 64
MAX_FUTURE_SKEW: Final = timedelta(hours=24)
_MAX_FUTURE_SKEW_SECONDS: Final = MAX_FUTURE_SKEW.total_seconds()
MAX_BATCH_RESPONSES: Final = 500
# Consumers store the revision as a PostgreSQL `integer`: a larger one would be accepted here and
# then dead-lettered by every consumer.
MAX_REVISION: Final = 2**31 - 1


class ResponseKind(StrEnum):
    TRANSACTIONAL = "transactional"
    RELATIONAL = "relational"


class Bucket(StrEnum):
    PROMOTER = "promoter"
    PASSIVE = "passive"
    DETRACTOR = "detractor"


def bucket_for(score: int) -> Bucket:
    """NPS bucket: promoter 9-10, passive 7-8, detractor 0-6."""
    if score >= 9:
        return Bucket.PROMOTER
    if score >= 7:
        return Bucket.PASSIVE
    return Bucket.DETRACTOR


def _not_too_far_in_future(value: datetime) -> datetime:
    # Compared as Unix seconds: aware-datetime arithmetic costs several times more per response.
    if value.timestamp() - time.time() > _MAX_FUTURE_SKEW_SECONDS:
        raise PydanticCustomError(
            "submitted_at_in_future", "submitted_at is more than 24 hours in the future"
        )
    return value


def _iso_8601_text(value: object) -> object:
    # pydantic also reads Unix times (numbers, and strings of digits) as datetimes; the contract
    # is ISO 8601, whose extended form opens with a four-digit year and a hyphen.
    if isinstance(value, datetime) or (
        isinstance(value, str) and value[4:5] == "-" and value[:4].isdigit()
    ):
        return value
    raise PydanticCustomError(
        "iso_8601_datetime",
        "submitted_at must be an ISO 8601 date and time with a UTC offset, "
        "such as 2026-11-01T10:00:00Z",
    )


def _without_nul(value: str | None) -> str | None:
    # JSON allows U+0000 but PostgreSQL text cannot store it: refuse it at the door rather than
    # accept an event that every database-backed consumer would have to dead-letter.
    if value is not None and "\x00" in value:
        raise PydanticCustomError(
            "nul_character", "text must not contain the NUL character (U+0000)"
        )
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=128)]
# Constraints on the key and value types (not a whole-dict validator) so an invalid attribute is
# reported at its own JSON pointer, e.g. `/attributes/plan`.
AttributeKey = Annotated[str, Field(min_length=1, max_length=MAX_ATTRIBUTE_KEY_CHARS)]
AttributeValue = Annotated[str, Field(max_length=MAX_ATTRIBUTE_VALUE_CHARS)]
Attributes = Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)]


class Respondent(BaseModel):
    """Who answered, when the survey tool knows. Personal data: never logged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: EmailStr | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    external_id: Annotated[str, Field(max_length=128)] | None = None

    _no_nul = field_validator("name", "external_id")(_without_nul)


class ResponseShape(BaseModel):
    """`ResponseIn`'s fields with every constraint pydantic-core checks natively, and none of
    its Python-level checks (NUL characters, touchpoint required when transactional,
    `submitted_at` not too far ahead).

    Ingest's happy path validates with this shape: the Python checks cost more per response
    than all the native ones together. `needs_python_checks` says when a body must go through
    `ResponseIn` itself, which then reports every problem exactly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    response_id: Identifier
    revision: Annotated[StrictInt, Field(ge=0, le=MAX_REVISION)] = 0
    kind: ResponseKind
    # Validated even when absent so "required when transactional" is reported at /touchpoint.
    touchpoint: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, validate_default=True
    )
    account_id: Identifier
    score: Annotated[StrictInt, Field(ge=0, le=10)]
    comment: Annotated[str, Field(max_length=MAX_COMMENT_CHARS)] | None = None
    respondent: Respondent | None = None
    # A Unix time (a number, or a string of digits) passes here; `needs_python_checks` spots it
    # and `ResponseIn` refuses it.
    submitted_at: AwareDatetime
    locale: Annotated[str, Field(min_length=2, max_length=35)] | None = None
    attributes: Attributes = Field(default_factory=dict)


class ResponseIn(ResponseShape):
    """One response as a survey tool (source type `api`) posts it to `POST /v1/responses`.

    `response_id` is the source's own stable id; `revision` grows when the source edits a
    response. Together with the source they make the event's `ce_id`, so posting the same
    response again produces the same event id and consumers keep it once.
    """

    _no_nul = field_validator("response_id", "account_id", "touchpoint", "comment", "locale")(
        _without_nul
    )
    _iso_8601 = field_validator("submitted_at", mode="before")(_iso_8601_text)
    _not_too_far_ahead = field_validator("submitted_at")(_not_too_far_in_future)

    @field_validator("attributes")
    @classmethod
    def _attributes_without_nul(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            _without_nul(key)
            _without_nul(item)
        return value

    @field_validator("touchpoint")
    @classmethod
    def _touchpoint_required_for_transactional(
        cls, value: str | None, info: ValidationInfo
    ) -> str | None:
        # `kind` is declared first, so it is in `info.data` unless it was itself invalid.
        if value is None and info.data.get("kind") is ResponseKind.TRANSACTIONAL:
            raise PydanticCustomError(
                "touchpoint_required", "touchpoint is required when kind is 'transactional'"
            )
        return value


# `"submitted_at": 1700000000` or `"1700000000"`: pydantic reads a Unix time, the contract
# refuses it. (A JSON number opens with a digit or a minus; an ISO 8601 string with `"YYYY-`.)
_UNIX_TIME_SUBMITTED_AT: Final = re.compile(rb'"submitted_at"\s*:\s*(?:"[0-9.]+"|-?[0-9])')


def needs_python_checks(body: bytes, items: Sequence[ResponseShape]) -> bool:
    """True when `ResponseIn`'s Python-level checks might fail for `items`, parsed from `body`
    as `ResponseShape`s; False means `ResponseIn` would accept them too."""
    # JSON can carry U+0000 only as this escape: a raw control character is invalid JSON. An
    # escaped backslash followed by "u0000" also matches; the full check then finds nothing.
    if b"\\u0000" in body:
        return True
    if _UNIX_TIME_SUBMITTED_AT.search(body) is not None:
        return True
    # Comparing aware datetimes costs less than converting each to a timestamp.
    latest = datetime.now(UTC) + MAX_FUTURE_SKEW
    transactional = ResponseKind.TRANSACTIONAL
    for item in items:
        if item.submitted_at > latest:
            return True
        if item.touchpoint is None and item.kind is transactional:
            return True
    return False


class ResponseBatchShape(BaseModel):
    """`ResponseBatchIn` made of `ResponseShape`s (see there)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    responses: Annotated[list[ResponseShape], Field(min_length=1, max_length=MAX_BATCH_RESPONSES)]


class ResponseBatchIn(BaseModel):
    """Up to 500 responses accepted or rejected together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    responses: Annotated[list[ResponseIn], Field(min_length=1, max_length=MAX_BATCH_RESPONSES)]


class ResponseReceived(BaseModel):
    """`npsloop.responses.v1` value: the canonical response, keyed by `account_id`.

    `source` is the configured source id the response came through (e.g. `api`, `typeform`);
    the event's `ce_id` is `response_event_id(source, response_id, revision)`.
    """

    # Consumers ignore fields added later (additive evolution keeps the `.v1` topic).
    model_config = ConfigDict(extra="ignore", frozen=True)

    response_id: Identifier
    revision: Annotated[int, Field(ge=0)]
    source: Identifier
    kind: ResponseKind
    touchpoint: str | None
    account_id: Identifier
    score: Annotated[int, Field(ge=0, le=10)]
    bucket: Bucket
    comment: Annotated[str, Field(max_length=MAX_COMMENT_CHARS)] | None
    respondent: Respondent | None
    submitted_at: AwareDatetime
    received_at: AwareDatetime
    locale: str | None
    attributes: dict[str, str]

    @property
    def event_id(self) -> uuid.UUID:
        return response_event_id(self.source, self.response_id, self.revision)

    @classmethod
    def from_input(
        cls, item: ResponseShape, *, source: str, received_at: datetime
    ) -> ResponseReceived:
        return cls(
            response_id=item.response_id,
            revision=item.revision,
            source=source,
            kind=item.kind,
            touchpoint=item.touchpoint,
            account_id=item.account_id,
            score=item.score,
            bucket=bucket_for(item.score),
            comment=item.comment,
            respondent=item.respondent,
            submitted_at=item.submitted_at,
            received_at=received_at,
            locale=item.locale,
            attributes=item.attributes,
        )


def response_event_id(source: str, response_id: str, revision: int) -> uuid.UUID:
    """Deterministic CloudEvents id: a redelivered webhook keeps its id, so consumers dedupe.

    UUIDv5 in `CE_ID_NAMESPACE` of source, response_id and revision joined by U+001F.
    """
    return uuid.UUID(response_event_id_text(source, response_id, revision))


def response_event_id_text(source: str, response_id: str, revision: int) -> str:
    """`str(response_event_id(...))`, computed without `uuid.UUID` objects (ingest's hot path)."""
    digest = _source_digest(source).copy()
    digest.update(f"{response_id}\x1f{revision}".encode())
    h = digest.hexdigest()
    # RFC 9562: version 5 in the 13th hex digit, variant 0b10 in the top bits of the 17th.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


# The 17th hex digit of a v5 UUID keeps its low two bits under the variant's top two (0b10).
_VARIANT_DIGIT: Final = {digit: "89ab"[int(digit, 16) & 0b11] for digit in "0123456789abcdef"}


@functools.lru_cache(maxsize=256)
def _source_digest(source: str) -> hashlib._Hash:
    # SHA-1 state after namespace and source: each id then hashes only its own part.
    return hashlib.sha1(CE_ID_NAMESPACE.bytes + f"{source}\x1f".encode(), usedforsecurity=False)


_BUCKETS: Final = tuple(bucket_for(score) for score in range(11))


def _dump_nested(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump()
    raise TypeError(f"cannot encode {type(value).__name__}")


def response_received_encoder(
    *, source: str, received_at: datetime
) -> Callable[[ResponseShape], bytes]:
    """Encodes validated responses to the JSON of `ResponseReceived.from_input(item, ...)`
    without building that model (ingest encodes tens of thousands a second).

    The contract tests prove the output agrees with the model field for field and that its
    keys are exactly `ResponseReceived`'s fields.
    """
    # A validated model keeps exactly its fields in `__dict__`; ResponseReceived adds three that
    # are the same for every response of a request but the bucket. Their JSON is written once
    # per score met (a single response needs one) and appended to each response's own JSON, in
    # place of its closing brace.
    tails: list[bytes | None] = [None] * len(_BUCKETS)
    dumps, option = orjson.dumps, orjson.OPT_UTC_Z

    def encode(item: ResponseShape) -> bytes:
        score = item.score
        tail = tails[score]
        if tail is None:
            added = {"source": source, "bucket": _BUCKETS[score], "received_at": received_at}
            tail = tails[score] = b"," + dumps(added, option=option)[1:]
        return dumps(item.__dict__, default=_dump_nested, option=option)[:-1] + tail

    return encode


def encode_response_received(item: ResponseShape, *, source: str, received_at: datetime) -> bytes:
    """The JSON of one `ResponseReceived` (see `response_received_encoder`)."""
    return response_received_encoder(source=source, received_at=received_at)(item)


EventType = Literal["io.npsloop.response.received.v1"]


# --- npsloop.accounts.v1 (compacted, key `account_id`; a null value deletes the account) -------

ACCOUNT_UPSERTED_TYPE: Final = "io.npsloop.account.upserted.v1"
ACCOUNT_DELETED_TYPE: Final = "io.npsloop.account.deleted.v1"


class AccountContact(BaseModel):
    """A person an account routes to (owner, backup owner or manager), resolved at publish time."""

    # Consumers ignore fields added later (additive evolution keeps the `.v1` topic).
    model_config = ConfigDict(extra="ignore", frozen=True)

    person_id: Identifier
    name: str
    email: str | None
    locale: str
    timezone: str
    active: bool


class AccountUpserted(BaseModel):
    """`npsloop.accounts.v1` value: the account as the alerts service's directory holds it now.

    Published after every effective change to the account or to one of its contacts. `version`
    grows with every change of the account row, so a consumer can ignore an older value.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    account_id: Identifier
    name: str
    segment: str | None
    tier: str | None
    locale: str
    timezone: str
    attributes: dict[str, str]
    owner_id: str | None
    backup_owner_id: str | None
    manager_id: str | None
    owner: AccountContact | None
    backup_owner: AccountContact | None
    manager: AccountContact | None
    version: Annotated[int, Field(ge=1)]
    updated_at: AwareDatetime


# --- npsloop.alerts.v1 (key `account_id`): alert lifecycle ----------------------------------


class AlertEventKind(StrEnum):
    """What happened to an alert; the CloudEvents type is `io.npsloop.alert.<kind>.v1`."""

    CREATED = "created"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    APPROVAL_REQUESTED = "approval_requested"
    REOPENED = "reopened"
    REMINDED = "reminded"
    ESCALATED = "escalated"
    SLA_BREACHED = "sla_breached"


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    APPROVAL_REQUESTED = "approval_requested"
    RESOLVED = "resolved"


def alert_event_type(kind: AlertEventKind) -> str:
    return f"io.npsloop.alert.{kind.value}.v1"


class AlertLifecycleEvent(BaseModel):
    """`npsloop.alerts.v1` value: one step in an alert's life, keyed by `account_id`.

    One alert exists per `(source, response_id)`; `revision` is the response revision the alert
    held when the step happened. The `ce_id` header is deterministic per (alert, kind, step), so
    consumers dedupe a re-published event on it.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    event: AlertEventKind
    alert_id: uuid.UUID
    account_id: Identifier
    source: Identifier
    response_id: Identifier
    revision: Annotated[int, Field(ge=0)]
    bucket: Bucket
    score: Annotated[int, Field(ge=0, le=10)]
    kind: ResponseKind
    touchpoint: str | None
    segment: str | None
    owner_id: str | None
    status: AlertStatus
    account_known: bool
    submitted_at: AwareDatetime
    received_at: AwareDatetime
    acknowledge_due_at: AwareDatetime | None
    resolve_due_at: AwareDatetime | None
    occurred_at: AwareDatetime
