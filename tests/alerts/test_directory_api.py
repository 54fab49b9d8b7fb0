"""The directory admin API against real PostgreSQL (each test rolls back)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.app import create_app
from npsloop_alerts.directory.models import OutboxMessage
from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.contracts import ACCOUNTS_TOPIC, AccountUpserted

PROBLEM = "application/problem+json"

ANA = {
    "name": "Ana Souza",
    "email": "ana@example.com",
    "slack_webhook_url": "https://hooks.slack.example/T1/B1/x",
    "telegram_chat_id": "-1001234567890",
    "locale": "pt-BR",
    "timezone": "America/Sao_Paulo",
    "quiet_hours_start": "22:00:00",
    "quiet_hours_end": "07:00:00",
}


async def put(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    return await client.put(path, json=body)


async def create_people(client: httpx.AsyncClient, *ids: str) -> None:
    for person_id in ids:
        response = await put(client, f"/v1/people/{person_id}", {"name": person_id.title()})
        assert response.status_code == 201, response.text


async def outbox(session: AsyncSession, account_id: str) -> list[OutboxMessage]:
    query = select(OutboxMessage).where(OutboxMessage.key == account_id).order_by(OutboxMessage.id)
    return list((await session.scalars(query)).all())


def event(message: OutboxMessage) -> AccountUpserted:
    assert message.value is not None
    return AccountUpserted.model_validate_json(message.value)


# --- authentication --------------------------------------------------------------------------


async def test_requests_without_the_admin_token_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/people", headers={"Authorization": ""})

    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_wrong_admin_token_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/people", headers={"Authorization": "Bearer not-the-token"})

    assert response.status_code == 401
    assert response.json()["detail"] == "The admin token is not valid."


async def test_the_admin_api_is_closed_when_no_token_is_configured(
    alerts_database_url: str,
) -> None:
    app = create_app(AlertsSettings(database_url=alerts_database_url, admin_token=None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://alerts.test"
    ) as anonymous:
        response = await anonymous.get("/v1/accounts", headers={"Authorization": "Bearer x"})

    assert response.status_code == 503
    assert "NPSLOOP_ADMIN_TOKEN" in response.json()["detail"]


def test_placeholder_admin_tokens_are_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="NPSLOOP_ADMIN_TOKEN"):
        AlertsSettings(admin_token="changeme")


# --- people ----------------------------------------------------------------------------------


async def test_put_person_creates_then_updates_idempotently(client: httpx.AsyncClient) -> None:
    created = await put(client, "/v1/people/ana", ANA)
    again = await put(client, "/v1/people/ana", ANA)
    changed = await put(client, "/v1/people/ana", {**ANA, "name": "Ana S."})

    assert created.status_code == 201
    assert created.headers["location"] == "/v1/people/ana"
    assert again.status_code == 200
    assert again.json() == created.json()
    assert changed.status_code == 200
    assert changed.json()["name"] == "Ana S."
    fetched = (await client.get("/v1/people/ana")).json()
    assert {key: fetched[key] for key in ANA} == {**ANA, "name": "Ana S."}
    assert fetched["active"] is True


async def test_locale_is_canonicalised(client: httpx.AsyncClient) -> None:
    response = await put(client, "/v1/people/li", {"name": "Li", "locale": "zh_cn"})

    assert response.json()["locale"] == "zh-CN"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "X", "locale": "fr"}, "/body/locale"),
        ({"name": "X", "timezone": "Mars/Olympus"}, "/body/timezone"),
        ({"name": "X", "email": "not-an-email"}, "/body/email"),
        ({"name": "X", "telegram_chat_id": "chat 1"}, "/body/telegram_chat_id"),
        ({"name": "X", "slack_webhook_url": "ftp://hooks"}, "/body/slack_webhook_url"),
        ({"name": "X", "quiet_hours_start": "22:00"}, "/body"),
        ({"name": ""}, "/body/name"),
        ({"name": "X", "favourite_colour": "red"}, "/body/favourite_colour"),
    ],
)
async def test_invalid_people_are_refused_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], pointer: str
) -> None:
    response = await put(client, "/v1/people/x", body)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert pointer in [error["pointer"] for error in response.json()["errors"]]


async def test_invalid_ids_in_the_path_are_refused(client: httpx.AsyncClient) -> None:
    response = await put(client, "/v1/people/-bad id", {"name": "X"})

    assert response.status_code == 422


async def test_unknown_people_are_404_problems(client: httpx.AsyncClient) -> None:
    got = await client.get("/v1/people/ghost")
    deleted = await client.delete("/v1/people/ghost")

    assert got.status_code == deleted.status_code == 404
    assert got.headers["content-type"] == PROBLEM
    assert got.json()["detail"] == "person 'ghost' does not exist"


async def test_people_are_listed_in_pages_with_a_total_and_next_link(
    client: httpx.AsyncClient,
) -> None:
    before = (await client.get("/v1/people")).json()["total"]
    await create_people(client, "page-a", "page-b", "page-c")

    first = (await client.get("/v1/people", params={"limit": 2})).json()
    assert first["total"] == before + 3
    assert len(first["items"]) == 2
    assert first["next"] == "/v1/people?limit=2&offset=2"

    seen = [item["id"] for item in first["items"]]
    next_url = first["next"]
    while next_url:
        page = (await client.get(next_url)).json()
        seen += [item["id"] for item in page["items"]]
        next_url = page["next"]
    assert seen == sorted(seen)
    assert {"page-a", "page-b", "page-c"} <= set(seen)
    assert len(seen) == before + 3


async def test_page_limits_are_validated(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/people", params={"limit": 0})

    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "/query/limit"


# --- accounts --------------------------------------------------------------------------------


async def test_put_account_validates_that_referenced_people_exist(
    client: httpx.AsyncClient,
) -> None:
    await create_people(client, "owner-1")
    response = await put(
        client,
        "/v1/accounts/acme",
        {"name": "Acme", "owner_id": "owner-1", "manager_id": "nobody"},
    )

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "pointer": "/manager_id",
            "detail": "person 'nobody' does not exist",
            "type": "unknown_person",
        }
    ]


async def test_put_account_creates_updates_and_publishes_each_change(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_people(client, "owner-1", "backup-1", "boss-1")
    body = {
        "name": "Acme Ltda",
        "segment": "wholesale",
        "tier": "gold",
        "locale": "pt-BR",
        "timezone": "America/Sao_Paulo",
        "owner_id": "owner-1",
        "backup_owner_id": "backup-1",
        "manager_id": "boss-1",
        "attributes": {"region": "south"},
    }
    created = await put(client, "/v1/accounts/acme-1", body)
    unchanged = await put(client, "/v1/accounts/acme-1", body)
    renamed = await put(client, "/v1/accounts/acme-1", {**body, "name": "Acme S.A."})

    assert created.status_code == 201
    assert unchanged.status_code == 200
    assert renamed.json()["version"] == 2
    messages = await outbox(session, "acme-1")
    assert len(messages) == 2  # the no-op PUT published nothing
    assert all(m.topic == ACCOUNTS_TOPIC and m.published_at is None for m in messages)
    first, second = (event(m) for m in messages)
    assert (first.name, first.version) == ("Acme Ltda", 1)
    assert (second.name, second.version) == ("Acme S.A.", 2)
    assert second.owner is not None
    assert second.owner.person_id == "owner-1"
    assert second.backup_owner is not None
    assert second.manager is not None
    assert second.manager.name == "Boss-1"
    assert second.segment == "wholesale"
    headers = dict(messages[1].headers)
    assert headers["ce_type"] == "io.npsloop.account.upserted.v1"
    assert headers["ce_subject"] == "acme-1"


async def test_deleting_an_account_publishes_a_tombstone(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await put(client, "/v1/accounts/gone-1", {"name": "Gone"})

    deleted = await client.delete("/v1/accounts/gone-1")

    assert deleted.status_code == 204
    assert (await client.get("/v1/accounts/gone-1")).status_code == 404
    last = (await outbox(session, "gone-1"))[-1]
    assert last.value is None
    assert dict(last.headers)["ce_type"] == "io.npsloop.account.deleted.v1"


async def test_a_contact_change_republishes_the_accounts_of_that_person(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_people(client, "shared-owner", "other")
    for account_id in ("acc-a", "acc-b"):
        await put(
            client, f"/v1/accounts/{account_id}", {"name": account_id, "owner_id": "shared-owner"}
        )
    await put(client, "/v1/accounts/acc-c", {"name": "c", "owner_id": "other"})

    await put(client, "/v1/people/shared-owner", {"name": "Renamed", "email": "r@example.com"})
    # A change that consumers of accounts.v1 do not see publishes nothing.
    await put(
        client,
        "/v1/people/shared-owner",
        {"name": "Renamed", "email": "r@example.com", "telegram_chat_id": "42"},
    )

    for account_id in ("acc-a", "acc-b"):
        messages = await outbox(session, account_id)
        assert len(messages) == 2
        latest = event(messages[-1])
        assert latest.version == 2
        assert latest.owner is not None
        assert (latest.owner.name, latest.owner.email) == ("Renamed", "r@example.com")
        assert (await client.get(f"/v1/accounts/{account_id}")).json()["version"] == 2
    assert len(await outbox(session, "acc-c")) == 1


async def test_deleting_a_referenced_person_is_a_conflict_that_explains(
    client: httpx.AsyncClient,
) -> None:
    await create_people(client, "busy")
    await put(client, "/v1/accounts/acc-x", {"name": "X", "backup_owner_id": "busy"})

    response = await client.delete("/v1/people/busy")

    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    detail = response.json()["detail"]
    assert "1 account(s)" in detail
    assert "acc-x" in detail
    assert "active=false" in detail
    assert (await client.get("/v1/people/busy")).status_code == 200


async def test_deleting_an_unreferenced_person(client: httpx.AsyncClient) -> None:
    await create_people(client, "free")

    assert (await client.delete("/v1/people/free")).status_code == 204
    assert (await client.get("/v1/people/free")).status_code == 404


async def test_accounts_are_listed_in_pages(client: httpx.AsyncClient) -> None:
    for index in range(3):
        await put(client, f"/v1/accounts/list-{index}", {"name": f"List {index}"})

    page = (await client.get("/v1/accounts", params={"limit": 1, "offset": 1})).json()

    assert page["limit"] == 1
    assert page["offset"] == 1
    assert page["total"] >= 3
    assert page["next"] == "/v1/accounts?limit=1&offset=2"


async def test_account_attributes_are_bounded(client: httpx.AsyncClient) -> None:
    response = await put(
        client, "/v1/accounts/big", {"name": "Big", "attributes": {"k": "v" * 300}}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"].startswith("/body/attributes")


# --- team ------------------------------------------------------------------------------------


async def test_team_configuration_round_trip_and_reference_checks(
    client: httpx.AsyncClient,
) -> None:
    await create_people(client, "cs-team", "wins-channel")

    bad = await put(client, "/v1/team", {"fallback_person_id": "nobody"})
    good = await put(
        client, "/v1/team", {"fallback_person_id": "cs-team", "wins_person_id": "wins-channel"}
    )

    assert bad.status_code == 422
    assert bad.json()["errors"][0]["pointer"] == "/fallback_person_id"
    assert good.status_code == 200
    team = (await client.get("/v1/team")).json()
    assert (team["fallback_person_id"], team["wins_person_id"]) == ("cs-team", "wins-channel")
    conflict = await client.delete("/v1/people/cs-team")
    assert conflict.status_code == 409
    assert "fallback_person_id" in conflict.json()["detail"]


# --- OpenAPI ---------------------------------------------------------------------------------


async def test_openapi_documents_every_admin_operation(client: httpx.AsyncClient) -> None:
    spec = orjson.loads((await client.get("/openapi.json")).content)

    assert spec["components"]["securitySchemes"]["AdminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <NPSLOOP_ADMIN_TOKEN>`",
    }
    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for method, operation in item.items()
    ]
    assert len(operations) >= 14
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        assert operation["security"] == [{"AdminToken": []}], where
        assert "401" in operation["responses"], where
        error = operation["responses"]["401"]["content"]
        assert "application/problem+json" in error, where
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert success, where
    put_account = spec["paths"]["/v1/accounts/{account_id}"]["put"]
    assert {"200", "201", "422"} <= set(put_account["responses"])
