"""Admin API for the directory: `/v1/people`, `/v1/accounts`, `/v1/team`.

PUT is an idempotent upsert (201 when it created, 200 otherwise); the request commits, together
with the `npsloop.accounts.v1` outbox record of every account it changed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from npsloop_alerts.auth import AdminAuth
from npsloop_alerts.directory.schemas import (
    AccountIn,
    AccountOut,
    PersonIn,
    PersonOut,
    TeamIn,
    TeamOut,
)
from npsloop_alerts.directory.service import DirectoryService
from npsloop_alerts.openapi import ADMIN_ERRORS, problem_responses
from npsloop_alerts.pagination import Page, Paging
from npsloop_alerts.routes import delete_route, get_route, list_route, mark_created, upsert_route
from npsloop_shared.db import DbSession

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
PersonId = Annotated[str, Path(pattern=ID_PATTERN, description="The person's id.")]
AccountId = Annotated[
    str, Path(pattern=ID_PATTERN, description="The `account_id` responses carry.")
]

router = APIRouter(prefix="/v1", dependencies=[AdminAuth])


# --- people -----------------------------------------------------------------------------------


@list_route(router, "/people", tags=["people"], summary="List people")
async def list_people(session: DbSession, paging: Paging) -> Page[PersonOut]:
    return await paging.fetch(DirectoryService(session).list_people, PersonOut.model_validate)


@get_route(router, "/people/{person_id}", tags=["people"], summary="Get a person")
async def get_person(person_id: PersonId, session: DbSession) -> PersonOut:
    return PersonOut.model_validate(await DirectoryService(session).get_person(person_id))


@upsert_route(
    router,
    "/people/{person_id}",
    PersonOut,
    tags=["people"],
    summary="Create or replace a person",
    description="Idempotent. A change to name, email, locale, timezone or active republishes "
    "every account the person is a contact of on `npsloop.accounts.v1`.",
)
async def put_person(
    person_id: PersonId, body: PersonIn, session: DbSession, response: Response
) -> PersonOut:
    person, outcome = await DirectoryService(session).upsert_person(person_id, body)
    if outcome.created:
        mark_created(response, f"/v1/people/{person_id}")
    return PersonOut.model_validate(person)


@delete_route(
    router,
    "/people/{person_id}",
    409,
    tags=["people"],
    summary="Delete a person",
    description="Refused (409) while an account, the team configuration or a rule refers to "
    "the person; reassign those first or set `active` to false.",
)
async def delete_person(person_id: PersonId, session: DbSession) -> None:
    await DirectoryService(session).delete_person(person_id)


# --- accounts ---------------------------------------------------------------------------------


@list_route(router, "/accounts", tags=["accounts"], summary="List accounts")
async def list_accounts(session: DbSession, paging: Paging) -> Page[AccountOut]:
    return await paging.fetch(DirectoryService(session).list_accounts, AccountOut.model_validate)


@get_route(router, "/accounts/{account_id}", tags=["accounts"], summary="Get an account")
async def get_account(account_id: AccountId, session: DbSession) -> AccountOut:
    return AccountOut.model_validate(await DirectoryService(session).get_account(account_id))


@upsert_route(
    router,
    "/accounts/{account_id}",
    AccountOut,
    tags=["accounts"],
    summary="Create or replace an account",
    description="Idempotent upsert. `owner_id`, `backup_owner_id` and `manager_id` must name "
    "existing people (422 names the field otherwise). Every effective change is published "
    "to `npsloop.accounts.v1`.",
)
async def put_account(
    account_id: AccountId, body: AccountIn, session: DbSession, response: Response
) -> AccountOut:
    account, outcome = await DirectoryService(session).upsert_account(account_id, body)
    if outcome.created:
        mark_created(response, f"/v1/accounts/{account_id}")
    return AccountOut.model_validate(account)


@delete_route(
    router,
    "/accounts/{account_id}",
    409,
    tags=["accounts"],
    summary="Delete an account",
    description="Publishes a tombstone (null value) for the account on `npsloop.accounts.v1`.",
)
async def delete_account(account_id: AccountId, session: DbSession) -> None:
    await DirectoryService(session).delete_account(account_id)


# --- team -------------------------------------------------------------------------------------


@router.get(
    "/team",
    tags=["team"],
    summary="Get the team routing configuration",
    response_model=TeamOut,
    responses=problem_responses(*ADMIN_ERRORS),
)
async def get_team(session: DbSession) -> TeamOut:
    return TeamOut.model_validate(await DirectoryService(session).get_team())


@router.put(
    "/team",
    tags=["team"],
    summary="Set the team fallback and wins destination",
    description="`fallback_person_id` receives alerts for unknown accounts and for accounts "
    "whose owner and backup owner are missing, inactive or unreachable on the channel a rule "
    "asks for. `wins_person_id` (often a shared #wins Slack channel set up as a person) "
    "receives what rules send to `team_wins`. Both must name existing people.",
    response_model=TeamOut,
    responses=problem_responses(*ADMIN_ERRORS, 422),
)
async def put_team(body: TeamIn, session: DbSession) -> TeamOut:
    return TeamOut.model_validate(await DirectoryService(session).update_team(body))
