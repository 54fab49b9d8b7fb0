"""/healthz, /readyz and /metrics; and logs that never carry secrets, comments or emails."""

from __future__ import annotations

import logging

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ingest.conftest import SIGNING_SECRET, TOKEN, Ingest, valid_response

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


async def test_health_and_readiness(ingest: Ingest) -> None:
    health = await ingest.client.get("/healthz")
    ready = await ingest.client.get("/readyz")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_requests_acceptances_rejections_and_latency(ingest: Ingest) -> None:
    await ingest.post({"responses": [valid_response(response_id=f"r{i}") for i in range(3)]})
    await ingest.post(valid_response(response_id="single"))
    await ingest.post(valid_response(score=99))
    await ingest.post(valid_response(), headers={"Authorization": "Bearer nope-nope-nope-nope"})
    await ingest.client.post("/v1/responses", content=b"{", headers={"Content-Type": "text/csv"})

    answer = await ingest.client.get("/metrics")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    assert found[("npsloop_ingest_requests_total", (("status", "202"),))] == 2
    assert found[("npsloop_ingest_requests_total", (("status", "422"),))] == 1
    assert found[("npsloop_ingest_requests_total", (("status", "401"),))] == 1
    assert found[("npsloop_ingest_requests_total", (("status", "415"),))] == 1
    assert found[("npsloop_ingest_accepted_responses_total", (("source", "api"),))] == 4
    assert found[("npsloop_ingest_accepted_responses_total", (("source", "other"),))] == 0
    rejected = "npsloop_ingest_rejected_requests_total"
    assert found[(rejected, (("reason", "invalid"),))] == 1
    assert found[(rejected, (("reason", "bad_credentials"),))] == 1
    assert found[(rejected, (("reason", "unsupported_media_type"),))] == 1
    assert found[(rejected, (("reason", "broker_unavailable"),))] == 0
    assert found[("npsloop_ingest_produce_seconds_count", ())] == 2
    assert found[("npsloop_ingest_produce_seconds_bucket", (("le", "+Inf"),))] == 2
    assert found[("npsloop_ingest_produce_seconds_sum", ())] > 0


async def test_logs_never_carry_secrets_comments_or_emails(
    ingest: Ingest, caplog: pytest.LogCaptureFixture
) -> None:
    secret_comment = "my-private-complaint-text"
    email = "someone.private@example.org"
    caplog.set_level(logging.DEBUG)

    await ingest.post(
        valid_response(comment=secret_comment, respondent={"email": email}, response_id="r-log")
    )
    await ingest.post(valid_response(comment=secret_comment, score=42))
    await ingest.post(
        valid_response(comment=secret_comment), headers={"Authorization": f"Bearer {TOKEN}z"}
    )
    await ingest.client.post(
        "/v1/responses",
        content=orjson.dumps(valid_response(comment=secret_comment)),
        headers={
            "Content-Type": "application/json",
            "webhook-id": "m",
            "webhook-timestamp": "1",
            "webhook-signature": "v1,AAAA",
        },
    )

    assert caplog.records, "the refusals are logged"
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    for forbidden in (secret_comment, email, TOKEN, SIGNING_SECRET):
        assert forbidden not in logged
    refused = [r for r in caplog.records if r.getMessage() == "request refused"]
    assert {r.__dict__["reason"] for r in refused} >= {"invalid", "bad_credentials"}
