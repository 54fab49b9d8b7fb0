"""When Kafka cannot acknowledge, ingest answers 503 with Retry-After and claims nothing;
it starts without Kafka and recovers when Kafka comes (back)."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from deploy.local.infra import KafkaBrokerFactory
from tests.ingest.conftest import Ingest, running, settings_for, valid_response

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def assert_unavailable(answer: httpx.Response) -> None:
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "5"
    assert "ids" not in answer.json()
    assert "accepted" not in answer.json()


async def eventually_accepted(ingest: Ingest, response_id: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        answer = await ingest.post(valid_response(response_id=response_id))
        if answer.status_code == 202:
            return
        assert_unavailable(answer)
        assert time.monotonic() < deadline, "ingest did not recover after Kafka came back"
        await asyncio.sleep(0.5)


async def test_broker_stopped_means_503_then_recovery(
    kafka_broker_factory: KafkaBrokerFactory, unique_name: str
) -> None:
    broker = kafka_broker_factory()
    settings = settings_for(
        broker.bootstrap_servers,
        f"npsloop.responses.v1.{unique_name}",
        ingest_ack_timeout=1.5,
        ingest_readiness_cache_seconds=0,
    )
    async with running(settings) as ingest:
        assert (await ingest.post(valid_response(response_id="before"))).status_code == 202
        assert (await ingest.client.get("/readyz")).status_code == 200

        await broker.stop_async()
        started = time.monotonic()
        single = await ingest.post(valid_response(response_id="while-down"))
        batch = await ingest.post(
            {"responses": [valid_response(response_id=f"b-{i}") for i in range(3)]}
        )
        waited = time.monotonic() - started

        assert_unavailable(single)
        assert_unavailable(batch)
        assert waited < 2 * 1.5 + 2, "the ack timeout bounds the wait"
        ready = await ingest.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["retry-after"] == "5"
        assert (await ingest.client.get("/healthz")).status_code == 200
        metrics = (await ingest.client.get("/metrics")).text
        assert 'npsloop_ingest_rejected_requests_total{reason="broker_unavailable"} 2.0' in metrics

        await broker.start_async()
        await eventually_accepted(ingest, "after", within_s=60)
        assert (await ingest.client.get("/readyz")).status_code == 200


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_starts_without_kafka_and_connects_when_it_appears(
    kafka_broker_factory: KafkaBrokerFactory, unique_name: str
) -> None:
    broker = kafka_broker_factory()
    await broker.stop_async()
    settings = settings_for(
        broker.bootstrap_servers,
        f"npsloop.responses.v1.{unique_name}",
        ingest_readiness_cache_seconds=0,
        ingest_startup_wait_seconds=0.5,
    )
    async with running(settings) as ingest:
        assert (await ingest.client.get("/healthz")).status_code == 200
        assert (await ingest.client.get("/readyz")).status_code == 503
        not_yet = await ingest.post(valid_response())
        assert_unavailable(not_yet)
        assert not_yet.json()["detail"] == "Kafka is not connected"

        await broker.start_async()
        await eventually_accepted(ingest, "once-up", within_s=60)
        assert len(await ingest.landed(1)) == 1


async def test_unreachable_kafka_never_yields_2xx(unique_name: str) -> None:
    settings = settings_for(
        f"127.0.0.1:{closed_port()}",
        f"npsloop.responses.v1.{unique_name}",
        ingest_startup_wait_seconds=0.2,
        ingest_readiness_cache_seconds=0,
    )
    async with running(settings) as ingest:
        answers = [await ingest.post(valid_response(response_id=f"r-{i}")) for i in range(3)]
        ready = await ingest.client.get("/readyz")

    for answer in answers:
        assert_unavailable(answer)
    assert ready.status_code == 503
