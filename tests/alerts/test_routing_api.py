"""Routing rules through the admin API on real PostgreSQL: seeded defaults, CRUD, preview."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = "application/problem+json"
DEFAULT_RULE_IDS = [
    "default-cancel-keywords",
    "default-detractor",
    "default-passive",
    "default-promoter",
]


def rule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Wholesale detractors to the manager",
        "priority": 50,
        "match": {"buckets": ["detractor"], "segments": ["wholesale"]},
        "actions": [{"recipients": ["manager"], "channels": ["email", "slack"]}],
    }
    return {**body, **overrides}


async def seed_directory(client: httpx.AsyncClient) -> None:
    people = {
        "ana": {
            "name": "Ana",
            "email": "ana@example.com",
            "slack_webhook_url": "https://hooks.slack.example/ana",
            "telegram_chat_id": "1001",
        },
        "mei": {"name": "Mei", "email": "mei@example.com"},
        "team": {"name": "CS team", "email": "cs@example.com"},
        "wins": {"name": "#wins", "slack_webhook_url": "https://hooks.slack.example/wins"},
    }
    for person_id, body in people.items():
        assert (await client.put(f"/v1/people/{person_id}", json=body)).status_code == 201
    account = {"name": "Acme", "segment": "retail", "owner_id": "ana", "manager_id": "mei"}
    assert (await client.put("/v1/accounts/acme", json=account)).status_code == 201
    team = {"fallback_person_id": "team", "wins_person_id": "wins"}
    assert (await client.put("/v1/team", json=team)).status_code == 200


async def preview(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/routing/preview", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def targets(result: dict[str, Any]) -> set[tuple[str, str]]:
    return {(target["person_id"], target["channel"]) for target in result["targets"]}


async def test_the_migration_seeds_the_default_rules_in_evaluation_order(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/v1/rules")).json()

    assert [rule["id"] for rule in page["items"]] == DEFAULT_RULE_IDS
    cancel = page["items"][0]
    assert cancel["match"]["keywords"] == ["cancel", "cancelar", "取消"]
    assert cancel["actions"][0]["recipients"] == ["manager"]


async def test_default_rules_route_each_bucket_as_the_product_promises(
    client: httpx.AsyncClient,
) -> None:
    await seed_directory(client)

    detractor = await preview(client, account_id="acme", score=2)
    passive = await preview(client, account_id="acme", score=7)
    promoter = await preview(client, account_id="acme", score=10)
    cancel = await preview(client, account_id="acme", score=8, comment="Vou CANCELAR amanhã")
    chinese = await preview(client, account_id="acme", score=5, comment="我们要取消合同")

    assert targets(detractor) == {("ana", "email"), ("ana", "slack"), ("ana", "telegram")}
    assert targets(passive) == {("ana", "email")}
    assert targets(promoter) == {("ana", "slack"), ("wins", "slack")}
    assert targets(cancel) == {("ana", "email"), ("mei", "email")}
    assert ("mei", "email") in targets(chinese)


async def test_an_unknown_account_is_routed_to_the_team_not_dropped(
    client: httpx.AsyncClient,
) -> None:
    await seed_directory(client)

    result = await preview(client, account_id="never-heard-of", score=0)

    assert result["account_known"] is False
    assert targets(result) == {("team", "email")}
    assert all(target["via_fallback"] for target in result["targets"])


async def test_quiet_hours_show_in_the_preview_as_a_later_send_time(
    client: httpx.AsyncClient,
) -> None:
    await seed_directory(client)
    night_owl = {
        "name": "Ana",
        "email": "ana@example.com",
        "timezone": "Asia/Shanghai",
        "quiet_hours_start": "21:00",
        "quiet_hours_end": "08:00",
    }
    await client.put("/v1/people/ana", json=night_owl)

    result = await preview(client, account_id="acme", score=7, at="2026-05-12T15:00:00Z")

    [target] = result["targets"]
    assert target["send_at"] == "2026-05-13T00:00:00Z"  # 08:00 in Shanghai


async def test_create_get_replace_and_delete_a_rule(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/rules", json=rule_body(id="wholesale-detractors"))

    assert created.status_code == 201
    assert created.headers["location"] == "/v1/rules/wholesale-detractors"
    assert created.json()["version"] == 1
    assert created.json()["match"]["segments"] == ["wholesale"]

    replaced = await client.put(
        "/v1/rules/wholesale-detractors", json=rule_body(enabled=False, priority=5)
    )
    assert replaced.status_code == 200
    assert (replaced.json()["enabled"], replaced.json()["version"]) == (False, 2)
    fetched = (await client.get("/v1/rules/wholesale-detractors")).json()
    assert fetched == replaced.json()
    listed = (await client.get("/v1/rules")).json()["items"]
    assert listed[0]["id"] == "wholesale-detractors"  # priority 5 sorts first

    assert (await client.delete("/v1/rules/wholesale-detractors")).status_code == 204
    gone = await client.get("/v1/rules/wholesale-detractors")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == PROBLEM


async def test_a_rule_without_an_id_gets_one(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/rules", json=rule_body())

    assert created.status_code == 201
    assert created.json()["id"].startswith("rule-")


async def test_put_creates_a_rule_that_does_not_exist(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/rules/new-rule", json=rule_body())

    assert response.status_code == 201
    assert response.headers["location"] == "/v1/rules/new-rule"


async def test_creating_an_existing_rule_is_a_conflict(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/rules", json=rule_body(id="default-detractor"))

    assert response.status_code == 409
    assert "PUT" in response.json()["detail"]


async def test_rules_sending_to_unknown_people_are_refused(client: httpx.AsyncClient) -> None:
    body = rule_body(actions=[{"recipients": ["owner", "person:ghost"], "channels": ["email"]}])

    response = await client.post("/v1/rules", json=body)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "pointer": "/actions/0/recipients/1",
            "detail": "person 'ghost' does not exist",
            "type": "unknown_person",
        }
    ]


async def test_invalid_rules_are_problem_json_naming_each_field(
    client: httpx.AsyncClient,
) -> None:
    body = rule_body(
        match={"buckets": ["furious"], "keywords": [" "]},
        actions=[{"recipients": ["owner"], "channels": ["pigeon"]}],
    )

    response = await client.post("/v1/rules", json=body)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    pointers = {error["pointer"] for error in response.json()["errors"]}
    assert {
        "/body/match/buckets/0",
        "/body/match/keywords/0",
        "/body/actions/0/channels/0",
    } <= pointers


async def test_a_person_a_rule_sends_to_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    await client.put("/v1/people/ceo", json={"name": "CEO", "email": "ceo@example.com"})
    body = rule_body(actions=[{"recipients": ["person:ceo"], "channels": ["email"]}])
    await client.put("/v1/rules/ceo-escalation", json=body)

    response = await client.delete("/v1/people/ceo")

    assert response.status_code == 409
    assert "ceo-escalation" in response.json()["detail"]


async def test_rule_ids_in_the_path_are_validated(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/rules/Not A Slug", json=rule_body())

    assert response.status_code == 422
