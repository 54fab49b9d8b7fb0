"""`/v1/alerts` and `/v1/deliveries` through the admin API (each test rolls back)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.alerting.directory_view import DirectoryView
from npsloop_alerts.alerting.repository import AlertRepository
from npsloop_alerts.alerting.service import AlertDecider, DeciderConfig
from npsloop_alerts.alerting.sla import SlaPolicy
from npsloop_alerts.routing.engine import ChannelConfig
from npsloop_alerts.routing.rules import Channel
from npsloop_shared.contracts import ResponseReceived
from tests.alerts.alerting_support import add_account, add_person, driver_connection, response

CHANNELS = frozenset({Channel.EMAIL, Channel.SLACK, Channel.TELEGRAM})


@pytest.fixture
async def decided(session: AsyncSession) -> list[ResponseReceived]:
    """Three alerts: two for acc-1 (a detractor, a passive), one detractor for acc-2."""
    await add_person(
        session,
        "olivia",
        email_address="olivia@acme.example",
        slack_webhook_url="https://hooks.slack.test/services/T1/B1/SECRETHOOK",
        telegram_chat_id="1001",
    )
    await add_account(session, "acc-1", owner_id="olivia")
    await add_account(session, "acc-2", owner_id="olivia", name="Globex")
    decider = AlertDecider(
        DirectoryView(ChannelConfig(enabled=CHANNELS)),
        DeciderConfig(timedelta(seconds=60), SlaPolicy(), "npsloop.alerts.v1"),
    )
    events = [
        response(account_id="acc-1", score=2),
        response(account_id="acc-1", score=8),
        response(account_id="acc-2", score=5),
    ]
    for position, event in enumerate(events):
        await decider.decide(
            AlertRepository(await driver_connection(session)), event.event_id, event
        )
        # One test transaction gives every row the same now(); production has one per alert.
        await session.execute(
            text(
                "UPDATE alerts SET created_at = now() + make_interval(secs => :s)"
                " WHERE response_id = :r"
            ),
            {"s": position, "r": event.response_id},
        )
    return events


async def test_alerts_are_listed_newest_first_with_filters_and_pages(
    client: httpx.AsyncClient, decided: list[ResponseReceived]
) -> None:
    everything = (await client.get("/v1/alerts")).json()
    assert everything["total"] == 3
    assert [item["response_id"] for item in everything["items"]] == [
        event.response_id for event in reversed(decided)
    ]

    detractors = (
        await client.get("/v1/alerts", params={"account_id": "acc-1", "bucket": "detractor"})
    ).json()
    assert [item["response_id"] for item in detractors["items"]] == [decided[0].response_id]

    first = (await client.get("/v1/alerts", params={"limit": 2})).json()
    assert len(first["items"]) == 2
    second = (await client.get(first["next"])).json()
    assert second["next"] is None
    assert [item["id"] for item in first["items"] + second["items"]] == [
        item["id"] for item in everything["items"]
    ]


async def test_an_alert_comes_with_its_deliveries_and_no_secret_urls(
    client: httpx.AsyncClient, decided: list[ResponseReceived]
) -> None:
    listed = (await client.get("/v1/alerts", params={"account_id": "acc-2"})).json()
    alert_id = listed["items"][0]["id"]

    answer = await client.get(f"/v1/alerts/{alert_id}")

    assert answer.status_code == 200
    body = answer.json()
    assert body["account_name"] == "Globex"
    assert body["owner_id"] == "olivia"
    channels = {d["channel"]: d for d in body["deliveries"]}
    assert set(channels) == {"email", "slack", "telegram"}
    assert channels["slack"]["destination"] == "https://hooks.slack.test/…"
    assert "SECRETHOOK" not in answer.text
    assert channels["email"]["status"] == "pending"


async def test_an_unknown_alert_is_a_404_problem(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/alerts/6f1d8a52-3c3e-4d6b-9a51-9f2f5d1c0b7e")

    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


async def test_deliveries_filter_by_status_and_channel(
    client: httpx.AsyncClient, decided: list[ResponseReceived]
) -> None:
    telegram = (await client.get("/v1/deliveries", params={"channel": "telegram"})).json()
    assert telegram["total"] == 2  # the two detractors; the passive is email only
    assert {item["channel"] for item in telegram["items"]} == {"telegram"}
    dead = (await client.get("/v1/deliveries", params={"status": "dead"})).json()
    assert dead["total"] == 0


async def test_only_a_dead_delivery_can_be_redriven(
    client: httpx.AsyncClient, session: AsyncSession, decided: list[ResponseReceived]
) -> None:
    (pending,) = (
        await client.get("/v1/deliveries", params={"channel": "slack", "limit": 1})
    ).json()["items"]
    refused = await client.post(f"/v1/deliveries/{pending['id']}/redrive")
    assert refused.status_code == 409

    await session.execute(
        text(
            "UPDATE deliveries SET status = 'dead', attempts = 3, dead_at = now(),"
            " last_error = 'channel_not_found' WHERE id = :id"
        ),
        {"id": pending["id"]},
    )
    await session.execute(
        text(
            "INSERT INTO delivery_destinations (key, disabled_at, consecutive_permanent_failures)"
            " VALUES (:key, now(), 3)"
        ),
        {"key": pending["destination_key"]},
    )
    redriven = await client.post(f"/v1/deliveries/{pending['id']}/redrive")

    assert redriven.status_code == 200
    assert redriven.json()["status"] == "pending"
    assert redriven.json()["attempts"] == 0
    (destination,) = (
        await session.execute(
            text("SELECT disabled_at, consecutive_permanent_failures FROM delivery_destinations")
        )
    ).all()
    assert tuple(destination) == (None, 0)
    detail = (await client.get(f"/v1/deliveries/{pending['id']}")).json()
    assert detail["attempt_history"] == []


async def test_redriving_an_unknown_delivery_is_a_404(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/deliveries/6f1d8a52-3c3e-4d6b-9a51-9f2f5d1c0b7e/redrive")

    assert answer.status_code == 404


async def test_the_alert_api_needs_the_admin_token(client: httpx.AsyncClient) -> None:
    for path in ("/v1/alerts", "/v1/deliveries"):
        answer = await client.get(path, headers={"Authorization": "Bearer wrong-token-value-xx"})
        assert answer.status_code == 401
