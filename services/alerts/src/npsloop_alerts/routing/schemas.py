"""API shapes of routing rules and of the routing preview."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from npsloop_alerts.routing.engine import RoutingDecision
from npsloop_alerts.routing.rules import Channel, RecipientRole, RuleDefinition
from npsloop_shared.contracts import ResponseKind

RULE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
RuleId = Annotated[str, Field(pattern=RULE_ID_PATTERN, description="Lowercase slug.")]


class RuleCreate(RuleDefinition):
    """`POST /v1/rules` body: a definition, optionally with the id to create it under."""

    id: RuleId | None = Field(default=None, description="Generated when omitted.")


class RuleOut(RuleDefinition):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    version: int
    created_at: datetime
    updated_at: datetime


class RoutingPreviewIn(BaseModel):
    """A response as routing sees it; nothing is stored or sent."""

    model_config = ConfigDict(extra="forbid")

    account_id: Annotated[str, Field(min_length=1, max_length=128)]
    score: Annotated[int, Field(ge=0, le=10)]
    kind: ResponseKind = ResponseKind.RELATIONAL
    touchpoint: Annotated[str, Field(max_length=128)] | None = None
    comment: Annotated[str, Field(max_length=5000)] | None = None
    segment: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="Used when the account is unknown or has no segment."
    )
    at: AwareDatetime | None = Field(default=None, description="Decision time (default: now).")


class TargetOut(BaseModel):
    person_id: str
    role: RecipientRole
    channel: Channel
    address: str
    send_at: datetime
    via_fallback: bool
    rule_ids: list[str]


class UnresolvedOut(BaseModel):
    rule_id: str
    recipient: str


class RoutingPreviewOut(BaseModel):
    account_known: bool
    matched_rule_ids: list[str]
    targets: list[TargetOut]
    unresolved: list[UnresolvedOut]

    @classmethod
    def from_decision(cls, decision: RoutingDecision) -> RoutingPreviewOut:
        return cls(
            account_known=decision.account_known,
            matched_rule_ids=list(decision.matched_rule_ids),
            targets=[
                TargetOut(
                    person_id=target.person_id,
                    role=target.role,
                    channel=target.channel,
                    address=target.address,
                    send_at=target.send_at,
                    via_fallback=target.via_fallback,
                    rule_ids=list(target.rule_ids),
                )
                for target in decision.targets
            ],
            unresolved=[
                UnresolvedOut(rule_id=item.rule_id, recipient=item.recipient)
                for item in decision.unresolved
            ],
        )
