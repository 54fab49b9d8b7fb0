"""The alert page behind "read the whole comment": a signed link is the only key it takes."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.alerting.directory_view import DirectoryView
from npsloop_alerts.alerting.links import AlertLinks
from npsloop_alerts.alerting.repository import AlertRepository
from npsloop_alerts.alerting.service import AlertDecider, DeciderConfig, alert_id_for
from npsloop_alerts.alerting.sla import SlaPolicy
from npsloop_alerts.routing.engine import ChannelConfig
from npsloop_alerts.routing.rules import Channel
from npsloop_alerts.settings import AlertsSettings
from tests.alerts.alerting_support import add_account, add_person, driver_connection, response
from tests.fakes.samples import CJK, SCRIPT

HOSTILE = f"{SCRIPT} {CJK} " + "and it went on and on. " * 200  # 4,600+ of 5,000 chars


@pytest.fixture
async def alert_id(session: AsyncSession) -> str:
    await add_person(session, "olivia", email_address="olivia@acme.example")
    await add_account(session, "acc-1", owner_id="olivia", name="Acme <Retail>")
    decider = AlertDecider(
        DirectoryView(ChannelConfig(enabled=frozenset({Channel.EMAIL}))),
        DeciderConfig(timedelta(seconds=60), SlaPolicy(), "npsloop.alerts.v1"),
    )
    event = response(account_id="acc-1", score=2, comment=HOSTILE)
    await decider.decide(AlertRepository(await driver_connection(session)), event.event_id, event)
    return str(alert_id_for(event.source, event.response_id))


def links_of(settings: AlertsSettings, clock: float | None = None) -> AlertLinks:
    links = AlertLinks.from_settings(settings)
    assert links is not None
    if clock is None:
        return links
    return AlertLinks(
        settings.alerts_public_base_url,
        links._key,
        ttl_seconds=settings.alerts_link_ttl_days * 86_400,
        clock=lambda: clock,
    )


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def open_link(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """GET the link as its recipient would: no admin token (the client's default is dropped)."""
    request = client.build_request("GET", path_of(url))
    del request.headers["Authorization"]
    return await client.send(request)


async def test_a_signed_link_opens_the_whole_comment_without_the_admin_token(
    client: httpx.AsyncClient, alerts_settings: AlertsSettings, alert_id: str
) -> None:
    url = links_of(alerts_settings).url(alert_id, lang="pt-BR")
    assert url.startswith(f"{alerts_settings.alerts_public_base_url}/alerts/{alert_id}?")

    page = await open_link(client, url)

    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'lang="pt-BR"' in page.text
    # Everything is there, escaped: no markup from the comment or the account name survives.
    assert "and it went on and on. " * 200 in page.text
    assert CJK in page.text
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "Acme &lt;Retail&gt;" in page.text


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("sig=", "sig=0"),
        lambda url: url.replace("exp=", "exp=9"),
        lambda url: url.split("&sig=")[0],
    ],
    ids=["signature", "expiry", "no-signature"],
)
async def test_a_tampered_link_is_refused(
    client: httpx.AsyncClient, alerts_settings: AlertsSettings, alert_id: str, tamper: object
) -> None:
    assert callable(tamper)
    url = tamper(links_of(alerts_settings).url(alert_id))

    page = await open_link(client, url)

    assert page.status_code in {403, 422}
    assert page.headers["content-type"] == "application/problem+json"
    assert "went on and on" not in page.text


async def test_an_expired_link_is_refused(
    client: httpx.AsyncClient, alerts_settings: AlertsSettings, alert_id: str
) -> None:
    fresh = links_of(alerts_settings).url(alert_id)
    issued_in_1970 = links_of(alerts_settings, clock=1_000_000.0).url(alert_id)

    assert (await open_link(client, fresh)).status_code == 200
    refused = await open_link(client, issued_in_1970)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/forbidden")


async def test_a_link_for_another_alert_or_key_does_not_open_this_one(
    client: httpx.AsyncClient, alerts_settings: AlertsSettings, alert_id: str
) -> None:
    other_key = alerts_settings.model_copy(
        update={"alerts_link_secret": SecretStr("another-secret-0123456789abcdef")}
    )
    forged = links_of(other_key).url(alert_id)
    wrong_alert = links_of(alerts_settings).url("00000000-0000-0000-0000-000000000000")

    assert (await open_link(client, forged)).status_code == 403
    moved = wrong_alert.replace("00000000-0000-0000-0000-000000000000", alert_id)
    assert (await open_link(client, moved)).status_code == 403


async def test_a_valid_link_to_a_deleted_alert_is_404(
    client: httpx.AsyncClient, alerts_settings: AlertsSettings
) -> None:
    gone = "00000000-0000-0000-0000-000000000000"

    page = await open_link(client, links_of(alerts_settings).url(gone))

    assert page.status_code == 404


def test_without_any_secret_messages_carry_no_link(alerts_settings: AlertsSettings) -> None:
    bare = alerts_settings.model_copy(update={"admin_token": None, "alerts_link_secret": None})
    assert AlertLinks.from_settings(bare) is None
