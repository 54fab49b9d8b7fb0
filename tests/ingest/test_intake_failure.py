"""A bug of ours on the hot path still answers with a problem, counts, and logs the traceback."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from npsloop_ingest.auth.replay import ReplayGuard
from npsloop_ingest.auth.sources import SourceAuthenticator
from npsloop_ingest.metrics import IngestMetrics
from npsloop_ingest.responses.intake import ResponseIntake
from npsloop_shared.errors import INTERNAL_ERROR_DETAIL
from npsloop_shared.kafka.producer import Acked, KafkaProducer, OutgoingRecord
from tests.ingest.conftest import TOKEN, settings_for, valid_response


class ProducerWithABug(KafkaProducer):
    """Stands in for any unforeseen failure after the request was validated."""

    async def publish_record(self, record: OutgoingRecord) -> Acked:
        raise RuntimeError("a bug of ours")


async def test_an_unexpected_error_is_answered_500_as_a_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for("127.0.0.1:9", "npsloop.responses.v1.unused")
    metrics = IngestMetrics(settings.ingest_sources)
    intake = ResponseIntake(
        producer=ProducerWithABug(settings.kafka_bootstrap_servers),
        authenticator=SourceAuthenticator(
            settings.ingest_sources,
            replay_guard=ReplayGuard(tolerance_seconds=300, max_entries=10),
            tolerance_seconds=300,
        ),
        metrics=metrics,
        topic=settings.ingest_topic,
        max_body_bytes=settings.ingest_max_body_bytes,
        source_ids=settings.ingest_sources,
    )
    body = orjson.dumps(valid_response())

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
    ]
    with caplog.at_level(logging.ERROR):
        reply = await intake.handle(headers, receive)

    assert reply.status == 500
    assert dict(reply.headers)[b"content-type"] == b"application/problem+json"
    assert orjson.loads(reply.body)["detail"] == INTERNAL_ERROR_DETAIL
    assert metrics.requests_by_status == {500: 1}
    [logged] = [r for r in caplog.records if r.getMessage() == "POST /v1/responses failed"]
    assert logged.exc_info is not None
