"""The ceiling: a bare ASGI app that also publishes one acknowledged Kafka record per POST.

It does what ingest cannot skip and nothing else: read the body, hand a ready-made record (the
size, key spread and CloudEvents headers of an ingest event) to the project's `KafkaProducer`,
wait for the broker's `acks=all` acknowledgement, answer 202. No authentication, validation or
encoding. `bench/ingest.py` runs it beside ingest and the bare app, so the same run shows how
much of the bare app's request rate an acknowledged produce per request leaves to any ingest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from bench.bare_asgi import ACCEPTED_BODY, ACCEPTED_HEADERS, Receive, Scope, Send
from npsloop_ingest.settings import IngestSettings
from npsloop_shared.cloudevents import JSON_CONTENT_TYPE, SPEC_VERSION
from npsloop_shared.contracts import (
    RESPONSE_RECEIVED_TYPE,
    ResponseShape,
    encode_response_received,
    response_event_id_text,
)
from npsloop_shared.kafka.producer import KafkaProducer, OutgoingRecord
from npsloop_shared.kafka.topics import ensure_topics

_ACCOUNTS: Final = 500  # as many keys as the bench's single-response script spreads over
_SAMPLE: Final = ResponseShape.model_validate(
    {
        "response_id": "bench-floor",
        "kind": "transactional",
        "touchpoint": "delivery",
        "account_id": "acct-0",
        "score": 3,
        "comment": "Late again",
        "submitted_at": "2026-11-01T10:00:00Z",
    }
)


def floor_records(topic: str) -> list[OutgoingRecord]:
    """One ready record per account key, each an ingest event's size and headers."""
    received_at = datetime.now(UTC)
    value = encode_response_received(_SAMPLE, source="bench", received_at=received_at)
    headers = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", response_event_id_text("bench", _SAMPLE.response_id, 0).encode()),
        ("ce_type", RESPONSE_RECEIVED_TYPE.encode()),
        ("ce_source", b"npsloop/ingest/bench"),
        ("ce_time", received_at.isoformat().encode()),
        ("content-type", JSON_CONTENT_TYPE.encode()),
    ]
    return [
        OutgoingRecord(topic, value, f"acct-{account}".encode(), headers)
        for account in range(_ACCOUNTS)
    ]


class KafkaFloorApp:
    def __init__(self, settings: IngestSettings) -> None:
        self._settings = settings
        self._producer = KafkaProducer(
            settings.kafka_bootstrap_servers,
            client_id="npsloop-bench-floor",
            ack_timeout=settings.ingest_ack_timeout,
            linger_ms=settings.ingest_linger_ms,
        )
        self._records = floor_records(settings.ingest_topic)
        self._posted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":  # the bench's readiness probe
            await self._answer(send, 200 if self._producer.is_running else 503)
            return
        more_body = True
        while more_body:
            message = await receive()
            more_body = message.get("more_body", False)
        self._posted += 1
        await self._producer.publish_record(self._records[self._posted % _ACCOUNTS])
        await self._answer(send, 202)

    async def _answer(self, send: Send, status: int) -> None:
        await send({"type": "http.response.start", "status": status, "headers": ACCEPTED_HEADERS})
        await send({"type": "http.response.body", "body": ACCEPTED_BODY})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await ensure_topics(
                    self._settings.kafka_bootstrap_servers, self._settings.topic_specs()
                )
                await self._producer.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._producer.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def app_from_environment() -> KafkaFloorApp:
    """The uvicorn factory: Kafka address and topic settings as ingest reads them."""
    return KafkaFloorApp(IngestSettings())
