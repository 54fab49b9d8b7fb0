"""The vocabulary of routing rules: what a rule matches and what it asks for.

These models are both the API's input (validated on write) and the engine's input (stored as
JSONB and read back), so a rule that was accepted is always one the engine understands.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Annotated, Final, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from npsloop_shared.contracts import Bucket, ResponseKind

MAX_KEYWORDS: Final = 50
MAX_KEYWORD_CHARS: Final = 64
PERSON_PREFIX: Final = "person:"


class Channel(StrEnum):
    """A medium a delivery goes out on."""

    EMAIL = "email"
    SLACK = "slack"
    TELEGRAM = "telegram"
    WEBHOOK = "webhook"
    CONSOLE = "console"


class ChannelChoice(StrEnum):
    """A channel as a rule names it: one medium, or every medium the recipient can receive."""

    EMAIL = "email"
    SLACK = "slack"
    TELEGRAM = "telegram"
    WEBHOOK = "webhook"
    CONSOLE = "console"
    ALL_AVAILABLE = "all_available"


class ChannelMode(StrEnum):
    """`all`: every listed channel the recipient has; `first_available`: the first one only."""

    ALL = "all"
    FIRST_AVAILABLE = "first_available"


class RecipientRole(StrEnum):
    OWNER = "owner"
    BACKUP_OWNER = "backup_owner"
    MANAGER = "manager"
    TEAM = "team"
    TEAM_WINS = "team_wins"
    PERSON = "person"


_ROLE_NAMES: Final = frozenset(
    role.value for role in RecipientRole if role is not RecipientRole.PERSON
)
_WHITESPACE: Final = re.compile(r"\s+")
_T = TypeVar("_T")


def normalise_text(value: str) -> str:
    """NFKC + casefold + collapsed whitespace, so full-width, title and lower case compare equal.

    CJK text has no word boundaries, so keywords match as substrings of the normalised comment.
    """
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", value).casefold()).strip()


def _valid_recipient(value: str) -> str:
    if value in _ROLE_NAMES:
        return value
    if value.startswith(PERSON_PREFIX) and 0 < len(value) - len(PERSON_PREFIX) <= 128:
        return value
    raise ValueError(
        "a recipient is one of owner, backup_owner, manager, team, team_wins, or person:<person_id>"
    )


def _valid_keyword(value: str) -> str:
    normalised = normalise_text(value)
    if not normalised:
        raise ValueError("a keyword must contain at least one non-space character")
    if len(normalised) > MAX_KEYWORD_CHARS:
        raise ValueError(f"a keyword is at most {MAX_KEYWORD_CHARS} characters")
    return normalised


def _valid_label(value: str) -> str:
    normalised = normalise_text(value)
    if not normalised:
        raise ValueError("must contain at least one non-space character")
    return normalised


Recipient = Annotated[str, AfterValidator(_valid_recipient)]
Keyword = Annotated[str, AfterValidator(_valid_keyword)]
Label = Annotated[str, Field(max_length=128), AfterValidator(_valid_label)]


def recipient_role(recipient: str) -> RecipientRole:
    if recipient.startswith(PERSON_PREFIX):
        return RecipientRole.PERSON
    return RecipientRole(recipient)


def recipient_person_id(recipient: str) -> str | None:
    """The person id of a `person:<id>` recipient, else None."""
    if recipient.startswith(PERSON_PREFIX):
        return recipient[len(PERSON_PREFIX) :]
    return None


def _unique(items: list[_T]) -> list[_T]:
    """Drop repeats, keep the first occurrence's order."""
    return list(dict.fromkeys(items))


Distinct = AfterValidator(_unique)


class RuleMatch(BaseModel):
    """Every non-empty criterion must hold; an empty list means "any". Keywords: any one of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    buckets: Annotated[list[Bucket], Field(max_length=3), Distinct] = Field(default_factory=list)
    segments: Annotated[list[Label], Field(max_length=50), Distinct] = Field(default_factory=list)
    touchpoints: Annotated[list[Label], Field(max_length=50), Distinct] = Field(
        default_factory=list
    )
    kinds: Annotated[list[ResponseKind], Field(max_length=2), Distinct] = Field(
        default_factory=list
    )
    keywords: Annotated[list[Keyword], Field(max_length=MAX_KEYWORDS), Distinct] = Field(
        default_factory=list,
        description="Case-insensitive, Unicode-normalised (NFKC) substrings of the comment.",
    )


class RuleAction(BaseModel):
    """Who receives the alert, and on which channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipients: Annotated[list[Recipient], Field(min_length=1, max_length=10), Distinct] = Field(
        description="owner, backup_owner, manager, team, team_wins or person:<person_id>. "
        "owner falls back to backup_owner then team; manager and person:<id> fall back to team."
    )
    channels: Annotated[list[ChannelChoice], Field(min_length=1, max_length=6), Distinct]
    mode: ChannelMode = ChannelMode.ALL
    respect_quiet_hours: bool = Field(
        default=True,
        description="Delay email and chat until the recipient's quiet hours end.",
    )

    @model_validator(mode="after")
    def _all_available_stands_alone(self) -> Self:
        if ChannelChoice.ALL_AVAILABLE in self.channels and len(self.channels) > 1:
            raise ValueError("all_available cannot be combined with other channels")
        return self


class RuleDefinition(BaseModel):
    """A rule's editable content (the id travels in the URL or is generated)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=2000)] = ""
    priority: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        default=100, description="Lower runs first; ties are ordered by id."
    )
    enabled: bool = True
    stop_processing: bool = Field(
        default=False, description="When this rule matches, later rules are not evaluated."
    )
    match: RuleMatch = Field(default_factory=RuleMatch)
    actions: Annotated[list[RuleAction], Field(min_length=1, max_length=10)]

    def person_references(self) -> list[tuple[int, int, str]]:
        """`(action index, recipient index, person id)` for every `person:<id>` recipient."""
        found = []
        for action_index, action in enumerate(self.actions):
            for recipient_index, recipient in enumerate(action.recipients):
                person_id = recipient_person_id(recipient)
                if person_id is not None:
                    found.append((action_index, recipient_index, person_id))
        return found
