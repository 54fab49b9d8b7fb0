"""API (and CSV) shapes of the directory: people, accounts, the team, pages."""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated, Final, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

from npsloop_shared.contracts import Attributes

SUPPORTED_LOCALES: Final = ("en", "pt-BR", "zh-CN")
_LOCALES_BY_FOLDED: Final = {
    locale.casefold().replace("_", "-"): locale for locale in SUPPORTED_LOCALES
}
_TELEGRAM_CHAT_ID: Final = re.compile(r"^(-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$")
_SLACK_CHANNEL: Final = re.compile(r"^[#@]?[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_RESOURCE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def _supported_locale(value: str) -> str:
    canonical = _LOCALES_BY_FOLDED.get(value.strip().casefold().replace("_", "-"))
    if canonical is None:
        raise ValueError(f"locale must be one of {', '.join(SUPPORTED_LOCALES)}")
    return canonical


def _iana_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Lisbon)") from None
    return value


def _http_url(value: str) -> str:
    # http is allowed for local receivers (tests, staging); production URLs are https.
    if not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an http(s) URL")
    return value


def _telegram_chat_id(value: str) -> str:
    if not _TELEGRAM_CHAT_ID.match(value):
        raise ValueError("a Telegram chat id is an integer (e.g. -1001234567890) or @channelname")
    return value


def _slack_channel(value: str) -> str:
    if not _SLACK_CHANNEL.match(value):
        raise ValueError("a Slack channel is a channel or user id (C0123ABC, U0123ABC) or #name")
    return value


def valid_resource_id(value: str) -> str:
    """Ids in URLs: 1-128 characters, letters, digits and `. _ : @ -`, not starting with a sign."""
    if not _RESOURCE_ID.match(value):
        raise ValueError(
            "an id is 1-128 characters of letters, digits and . _ : @ -, starting with a letter "
            "or digit"
        )
    return value


Locale = Annotated[str, AfterValidator(_supported_locale)]
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_iana_timezone)]
HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]
ResourceId = Annotated[str, AfterValidator(valid_resource_id)]
Text = Annotated[str, Field(min_length=1, max_length=256)]
Label = Annotated[str, Field(min_length=1, max_length=64)]


class PersonIn(BaseModel):
    """A person, or a shared destination such as a #wins channel (`PUT /v1/people/{id}`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Text
    email: EmailStr | None = None
    slack_webhook_url: HttpUrl | None = Field(
        default=None, description="Slack incoming-webhook URL."
    )
    slack_channel: Annotated[str, AfterValidator(_slack_channel)] | None = Field(
        default=None, description="Channel or user id for bot mode (chat.postMessage)."
    )
    telegram_chat_id: Annotated[str, AfterValidator(_telegram_chat_id)] | None = None
    webhook_url: HttpUrl | None = Field(
        default=None, description="Outbound webhook endpoint (CRMs, other tools)."
    )
    locale: Locale = "en"
    timezone: TimeZone = "UTC"
    quiet_hours_start: time | None = Field(
        default=None, description="Local time (in `timezone`) from which chat and email wait."
    )
    quiet_hours_end: time | None = Field(default=None, description="Local time they resume.")
    active: bool = True

    @model_validator(mode="after")
    def _quiet_hours_come_in_pairs(self) -> Self:
        if (self.quiet_hours_start is None) != (self.quiet_hours_end is None):
            raise ValueError("quiet_hours_start and quiet_hours_end must be given together")
        for moment in (self.quiet_hours_start, self.quiet_hours_end):
            if moment is not None and moment.tzinfo is not None:
                raise ValueError("quiet hours are local times without an offset")
        return self


class PersonOut(PersonIn):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    updated_at: datetime


class AccountIn(BaseModel):
    """An account as `PUT /v1/accounts/{id}` takes it; the id is the responses' `account_id`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Text
    segment: Label | None = Field(default=None, description="e.g. retail, wholesale.")
    tier: Label | None = None
    locale: Locale = "en"
    timezone: TimeZone = "UTC"
    owner_id: ResourceId | None = None
    backup_owner_id: ResourceId | None = None
    manager_id: ResourceId | None = None
    attributes: Attributes = Field(default_factory=dict)

    def person_references(self) -> dict[str, str]:
        """`{field name: person id}` for every contact this account names."""
        fields = {
            "owner_id": self.owner_id,
            "backup_owner_id": self.backup_owner_id,
            "manager_id": self.manager_id,
        }
        return {name: person_id for name, person_id in fields.items() if person_id is not None}


class AccountOut(AccountIn):
    model_config = ConfigDict(from_attributes=True)

    id: str
    version: int
    created_at: datetime
    updated_at: datetime


class TeamIn(BaseModel):
    """Team-wide routing: who gets anything unassigned, and where promoter "wins" go."""

    model_config = ConfigDict(extra="forbid")

    fallback_person_id: ResourceId | None = Field(
        default=None,
        description="Receives alerts for unknown accounts and accounts without a reachable owner.",
    )
    wins_person_id: ResourceId | None = Field(
        default=None,
        description="A person (typically a shared #wins channel) for the `team_wins` recipient.",
    )


class TeamOut(TeamIn):
    model_config = ConfigDict(from_attributes=True)

    updated_at: datetime
