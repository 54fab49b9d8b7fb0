"""Admin API for routing: `/v1/rules` (validated on write) and a dry-run preview."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from npsloop_alerts.auth import AdminAuth, Settings
from npsloop_alerts.openapi import ADMIN_ERRORS, problem_responses
from npsloop_alerts.pagination import Page, Paging
from npsloop_alerts.routes import delete_route, get_route, list_route, mark_created, upsert_route
from npsloop_alerts.routing.engine import ResponseFacts
from npsloop_alerts.routing.rules import RuleDefinition
from npsloop_alerts.routing.schemas import (
    RULE_ID_PATTERN,
    RoutingPreviewIn,
    RoutingPreviewOut,
    RuleCreate,
    RuleOut,
)
from npsloop_alerts.routing.service import RoutingService, RuleService, rule_out
from npsloop_shared.contracts import bucket_for
from npsloop_shared.db import DbSession

RuleId = Annotated[str, Path(pattern=RULE_ID_PATTERN, description="The rule's id.")]

router = APIRouter(prefix="/v1", dependencies=[AdminAuth])


@list_route(
    router,
    "/rules",
    tags=["rules"],
    summary="List routing rules",
    description="In evaluation order: by priority (lower first), then id.",
)
async def list_rules(session: DbSession, paging: Paging) -> Page[RuleOut]:
    return await paging.fetch(RuleService(session).list, rule_out)


@router.post(
    "/rules",
    tags=["rules"],
    summary="Create a routing rule",
    status_code=status.HTTP_201_CREATED,
    response_model=RuleOut,
    responses=problem_responses(*ADMIN_ERRORS, 409, 422),
)
async def create_rule(body: RuleCreate, session: DbSession, response: Response) -> RuleOut:
    rule = await RuleService(session).create(body)
    response.headers["Location"] = f"/v1/rules/{rule.id}"
    return rule_out(rule)


@get_route(router, "/rules/{rule_id}", tags=["rules"], summary="Get a routing rule")
async def get_rule(rule_id: RuleId, session: DbSession) -> RuleOut:
    return rule_out(await RuleService(session).get(rule_id))


@upsert_route(
    router, "/rules/{rule_id}", RuleOut, tags=["rules"], summary="Create or replace a routing rule"
)
async def put_rule(
    rule_id: RuleId, body: RuleDefinition, session: DbSession, response: Response
) -> RuleOut:
    rule, created = await RuleService(session).put(rule_id, body)
    if created:
        mark_created(response, f"/v1/rules/{rule_id}")
    return rule_out(rule)


@delete_route(router, "/rules/{rule_id}", tags=["rules"], summary="Delete a routing rule")
async def delete_rule(rule_id: RuleId, session: DbSession) -> None:
    await RuleService(session).delete(rule_id)


@router.post(
    "/routing/preview",
    tags=["rules"],
    summary="Preview routing for a response",
    description="Runs the current rules and directory against a response without storing or "
    "sending anything: who would be alerted, on which channel, and when.",
    response_model=RoutingPreviewOut,
    responses=problem_responses(*ADMIN_ERRORS, 422),
)
async def preview_routing(
    body: RoutingPreviewIn, session: DbSession, settings: Settings
) -> RoutingPreviewOut:
    facts = ResponseFacts(
        account_id=body.account_id,
        bucket=bucket_for(body.score),
        kind=body.kind,
        touchpoint=body.touchpoint,
        comment=body.comment,
        segment_hint=body.segment,
    )
    decision = await RoutingService(session, settings.channel_config()).decide(
        facts, now=body.at or datetime.now(UTC)
    )
    return RoutingPreviewOut.from_decision(decision)
