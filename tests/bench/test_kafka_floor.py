"""The bench's Kafka floor really produces: its figure bounds ingest only if each 202 waited for
an acknowledged record shaped like ingest's, on the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from bench.kafka_floor_asgi import KafkaFloorApp
from npsloop_shared.cloudevents import CloudEventAttributes
from npsloop_shared.contracts import RESPONSE_RECEIVED_TYPE, ResponseReceived
from tests.ingest.conftest import read_topic, settings_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


@asynccontextmanager
async def lifespan(app: KafkaFloorApp) -> AsyncIterator[None]:
    """Run the app's ASGI lifespan (startup before the body, shutdown after) as uvicorn does."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: Any) -> None:
        await from_app.put(message)

    running = asyncio.create_task(app({"type": "lifespan"}, to_app.get, send))
    await to_app.put({"type": "lifespan.startup"})
    assert (await from_app.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        assert (await from_app.get())["type"] == "lifespan.shutdown.complete"
        await running


async def test_each_post_is_answered_after_an_ingest_shaped_record_landed(
    kafka_bootstrap: str, unique_name: str
) -> None:
    settings = settings_for(kafka_bootstrap, f"npsloop.responses.v1.{unique_name}")
    app = KafkaFloorApp(settings)
    async with (
        lifespan(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://floor"
        ) as client,
    ):
        ready = await client.get("/")
        answers = [await client.post("/v1/responses", content=b"{}") for _ in range(3)]

    assert ready.status_code == 200
    assert [answer.status_code for answer in answers] == [202, 202, 202]
    landed = await read_topic(
        kafka_bootstrap, settings.ingest_topic, settings.ingest_topic_partitions, expected=3
    )
    assert len(landed) == 3
    assert {record.key for record in landed} == {b"acct-1", b"acct-2", b"acct-3"}
    for record in landed:
        event = ResponseReceived.model_validate(record.value)
        attributes = CloudEventAttributes.from_headers(list(record.headers.items()))
        assert attributes.type == RESPONSE_RECEIVED_TYPE
        assert attributes.time == event.received_at
