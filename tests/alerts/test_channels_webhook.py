"""Outbound webhook channel against a local receiver that verifies Standard Webhooks signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from npsloop_alerts.channels import (
    DestinationConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
    WebhookDestination,
    WebhookProvider,
    WebhookRef,
)
from tests.fakes.samples import HOSTILE_COMMENTS, SCRIPT, alert_message
from tests.fakes.server import Scripted
from tests.fakes.webhook_receiver import FakeWebhookReceiver, new_secret


@pytest.fixture(scope="module")
async def receiver_server() -> AsyncIterator[FakeWebhookReceiver]:
    async with FakeWebhookReceiver() as fake:
        yield fake


@pytest.fixture
def receiver(receiver_server: FakeWebhookReceiver) -> FakeWebhookReceiver:
    receiver_server.reset()
    return receiver_server


@pytest.fixture
async def provider() -> AsyncIterator[WebhookProvider]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        yield WebhookProvider(client)


def _destination(receiver: FakeWebhookReceiver) -> WebhookDestination:
    return WebhookDestination(url=receiver.endpoint_url(), secret=SecretStr(receiver.secret))


async def test_signed_payload_is_verified_by_the_receiver(
    receiver: FakeWebhookReceiver, provider: WebhookProvider
) -> None:
    destination = _destination(receiver)
    message = alert_message(comment=SCRIPT)
    receipt = await provider.send(provider.render(message, destination), destination)

    [delivery] = receiver.deliveries
    assert isinstance(receipt.ref, WebhookRef)
    assert delivery.webhook_id == receipt.ref.webhook_id
    assert delivery.webhook_id.startswith("msg_")
    payload = delivery.payload
    assert payload["type"] == "npsloop.alert.notified"
    data = payload["data"]
    assert data["alert_id"] == "a-1"
    assert data["bucket"] == "detractor"
    assert data["score"] == 3
    assert data["comment"] == SCRIPT  # JSON carries the raw text; receivers escape for display
    assert data["account"] == {"id": "acc-42", "name": "Acme Retail", "segment": "retail"}
    assert data["respondent"]["email"] == "maria@example.com"
    assert data["sla_deadline"] == "2026-03-02T19:30:00+00:00"
    assert [action["kind"] for action in data["actions"]] == ["acknowledge", "resolve"]
    [request] = receiver.received()
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["content-type"] == "application/json"


async def test_webhook_id_is_stable_across_retries_and_changes_per_revision(
    receiver: FakeWebhookReceiver, provider: WebhookProvider
) -> None:
    destination = _destination(receiver)
    receiver.script(Scripted(503, text="busy"))
    rendered = provider.render(alert_message(), destination)
    with pytest.raises(TransientDeliveryError):
        await provider.send(rendered, destination)
    await provider.send(provider.render(alert_message(), destination), destination)
    await provider.send(provider.render(alert_message(revision=1), destination), destination)

    first, retry, revision = receiver.received()
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert revision.headers["webhook-id"] != first.headers["webhook-id"]
    assert [item.status for item in receiver.received()] == [503, 200, 200]


async def test_every_hostile_comment_round_trips_exactly(
    receiver: FakeWebhookReceiver, provider: WebhookProvider
) -> None:
    destination = _destination(receiver)
    for comment in HOSTILE_COMMENTS.values():
        await provider.send(
            provider.render(alert_message(comment=comment), destination), destination
        )
    assert [item.payload["data"]["comment"] for item in receiver.deliveries] == list(
        HOSTILE_COMMENTS.values()
    )


async def test_wrong_secret_is_refused_by_the_receiver_and_permanent(
    receiver: FakeWebhookReceiver, provider: WebhookProvider
) -> None:
    destination = WebhookDestination(url=receiver.endpoint_url(), secret=SecretStr(new_secret()))
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.send(provider.render(alert_message(), destination), destination)
    assert caught.value.vendor_status == 401
    assert receiver.rejected == 1


async def test_rate_limit_is_transient_with_retry_after(
    receiver: FakeWebhookReceiver, provider: WebhookProvider
) -> None:
    receiver.script(Scripted(429, text="slow down", headers={"Retry-After": "12"}))
    destination = _destination(receiver)
    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(provider.render(alert_message(), destination), destination)
    assert caught.value.retry_after == 12


@pytest.mark.parametrize(
    ("status", "transient"),
    [(500, True), (408, True), (400, False), (404, False), (410, False), (302, False)],
)
async def test_status_classification(
    receiver: FakeWebhookReceiver, provider: WebhookProvider, status: int, transient: bool
) -> None:
    receiver.script(Scripted(status, text="x", headers={"Location": "https://elsewhere.test/"}))
    destination = _destination(receiver)
    expected = TransientDeliveryError if transient else PermanentDeliveryError
    with pytest.raises(expected) as caught:
        await provider.send(provider.render(alert_message(), destination), destination)
    assert caught.value.vendor_status == status


async def test_unusable_secret_or_url_is_a_config_error(provider: WebhookProvider) -> None:
    bad_secret = WebhookDestination(url="https://crm.test/hook", secret=SecretStr(""))
    with pytest.raises(DestinationConfigError):
        await provider.send(provider.render(alert_message(), bad_secret), bad_secret)
    bad_url = WebhookDestination(url="ftp://crm.test/hook", secret=SecretStr(new_secret()))
    with pytest.raises(DestinationConfigError):
        await provider.send(provider.render(alert_message(), bad_url), bad_url)
