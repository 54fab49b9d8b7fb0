"""The ingest app, in process, on the real broker: each test gets its own topic and app.

`ingest` runs the app's lifespan (Kafka connection, topic creation) and gives an
`httpx.AsyncClient` speaking to it through ASGI, plus a reader for what landed on the topic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from npsloop_ingest.app import create_app
from npsloop_ingest.front import IngestFront
from npsloop_ingest.settings import IngestSettings
from npsloop_shared.signing import generate_secret

TOKEN = "tok-ingest-tests-0123456789abcdef"
OTHER_TOKEN = "tok-other-source-fedcba9876543210"
SIGNING_SECRET = generate_secret()
OTHER_SIGNING_SECRET = generate_secret()
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def sources() -> str:
    return json.dumps(
        {
            "api": {"type": "api", "token": TOKEN, "signing_secret": SIGNING_SECRET},
            "other": {"type": "api", "token": OTHER_TOKEN},
            "signed-only": {"type": "api", "signing_secret": OTHER_SIGNING_SECRET},
        }
    )


def valid_response(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "response_id": "resp-1",
        "kind": "transactional",
        "touchpoint": "delivery",
        "account_id": "acct-1",
        "score": 4,
        "comment": "Arrived late.",
        "submitted_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
    body.update(overrides)
    return body


@dataclass(frozen=True)
class Landed:
    """One record read back from the topic."""

    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]
    headers: dict[str, bytes]


@dataclass
class Ingest:
    front: IngestFront
    client: httpx.AsyncClient
    settings: IngestSettings

    @property
    def topic(self) -> str:
        return self.settings.ingest_topic

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.post("/v1/responses", json=body, headers=headers or BEARER)

    async def landed(self, expected: int, *, wait_s: float = 10.0) -> list[Landed]:
        return await read_topic(
            self.settings.kafka_bootstrap_servers,
            self.topic,
            self.settings.ingest_topic_partitions,
            expected,
            wait_s,
        )


async def read_topic(
    bootstrap: str, topic: str, partition_count: int, expected: int, wait_s: float = 10.0
) -> list[Landed]:
    """Every record on `topic` from the beginning, once at least `expected` are there (or the
    wait is over); ordered by partition and offset."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        landed: list[Landed] = []
        deadline = asyncio.get_running_loop().time() + wait_s
        while len(landed) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                landed.extend(
                    Landed(r.partition, r.offset, r.key, json.loads(r.value), dict(r.headers))
                    for r in records
                )
        return sorted(landed, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def settings_for(bootstrap: str, topic: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "ingest_sources": json.loads(sources()),
        "ingest_topic": topic,
        "ingest_topic_partitions": 3,
        "ingest_ack_timeout": 5.0,
    }
    values.update(overrides)
    return IngestSettings(**values)


@asynccontextmanager
async def running(settings: IngestSettings) -> AsyncIterator[Ingest]:
    """The app with its lifespan running, and a client speaking ASGI to it."""
    front = create_app(settings)
    async with front.api.router.lifespan_context(front.api):
        transport = httpx.ASGITransport(app=front)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield Ingest(front, client, settings)


@pytest.fixture
def ingest_settings(kafka_bootstrap: str, unique_name: str) -> IngestSettings:
    return settings_for(kafka_bootstrap, f"npsloop.responses.v1.{unique_name}")


@pytest.fixture
async def ingest(ingest_settings: IngestSettings) -> AsyncIterator[Ingest]:
    async with running(ingest_settings) as app:
        yield app
