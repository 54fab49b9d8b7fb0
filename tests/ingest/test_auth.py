"""A source proves itself with its bearer token or a Standard Webhooks signature.

Signatures here are made by the `standardwebhooks` library itself, as a real sender would.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from npsloop_shared.contracts import response_event_id
from npsloop_shared.signing import generate_secret
from tests.ingest.conftest import (
    OTHER_SIGNING_SECRET,
    OTHER_TOKEN,
    SIGNING_SECRET,
    TOKEN,
    Ingest,
    valid_response,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

JSON = {"Content-Type": "application/json"}


def signed_headers(
    body: bytes,
    *secrets: str,
    webhook_id: str | None = None,
    at: datetime | None = None,
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signatures = " ".join(Webhook(secret).sign(webhook_id, at, body.decode()) for secret in secrets)
    return {
        **JSON,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


async def post_raw(ingest: Ingest, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await ingest.client.post("/v1/responses", content=body, headers=headers)


def assert_unauthorized(answer: httpx.Response, detail_part: str) -> None:
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert detail_part in answer.json()["detail"]


async def test_missing_credentials(ingest: Ingest) -> None:
    answer = await post_raw(ingest, orjson.dumps(valid_response()), JSON)

    assert_unauthorized(answer, "Authorization: Bearer")


async def test_bad_token(ingest: Ingest) -> None:
    answer = await post_raw(
        ingest, orjson.dumps(valid_response()), {**JSON, "Authorization": f"Bearer {TOKEN}x"}
    )

    assert_unauthorized(answer, "bearer token is not valid")


async def test_other_scheme_is_refused(ingest: Ingest) -> None:
    answer = await post_raw(
        ingest, orjson.dumps(valid_response()), {**JSON, "Authorization": f"Basic {TOKEN}"}
    )

    assert_unauthorized(answer, "Only the Bearer")


async def test_token_identifies_its_source(ingest: Ingest) -> None:
    answer = await post_raw(
        ingest,
        orjson.dumps(valid_response(response_id="r-other")),
        {**JSON, "Authorization": f"bearer {OTHER_TOKEN}"},
    )

    assert answer.status_code == 202
    assert answer.json()["ids"] == [str(response_event_id("other", "r-other", 0))]


async def test_bad_token_is_refused_even_after_the_good_one_was_seen(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response())
    good = await post_raw(ingest, body, {**JSON, "Authorization": f"Bearer {TOKEN}"})
    bad = await post_raw(ingest, body, {**JSON, "Authorization": f"Bearer {TOKEN[:-1]}"})

    assert good.status_code == 202
    assert_unauthorized(bad, "bearer token is not valid")


async def test_standard_webhooks_signature_is_accepted(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response(response_id="r-signed"))

    answer = await post_raw(ingest, body, signed_headers(body, SIGNING_SECRET))

    assert answer.status_code == 202
    assert answer.json()["ids"] == [str(response_event_id("api", "r-signed", 0))]
    [record] = await ingest.landed(1)
    assert record.value["source"] == "api"


async def test_signature_identifies_a_signed_only_source(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response(response_id="r-signed-only"))

    answer = await post_raw(ingest, body, signed_headers(body, OTHER_SIGNING_SECRET))

    assert answer.status_code == 202
    assert answer.json()["ids"] == [str(response_event_id("signed-only", "r-signed-only", 0))]


async def test_rotation_two_signatures_one_matching(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response(response_id="r-rotating"))
    retired = generate_secret()

    answer = await post_raw(ingest, body, signed_headers(body, retired, SIGNING_SECRET))

    assert answer.status_code == 202


async def test_bad_signature(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response())

    answer = await post_raw(ingest, body, signed_headers(body, generate_secret()))

    assert_unauthorized(answer, "signature does not match")


async def test_tampered_body(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response(score=2))
    headers = signed_headers(body, SIGNING_SECRET)

    answer = await post_raw(ingest, body.replace(b'"score":2', b'"score":9'), headers)

    assert_unauthorized(answer, "signature does not match")


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)], ids=["old", "new"])
async def test_timestamp_outside_five_minutes(ingest: Ingest, skew: timedelta) -> None:
    body = orjson.dumps(valid_response())

    answer = await post_raw(
        ingest, body, signed_headers(body, SIGNING_SECRET, at=datetime.now(UTC) + skew)
    )

    assert_unauthorized(answer, "webhook-timestamp is more than 300 seconds")


async def test_timestamp_inside_five_minutes(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response())
    four_minutes_ago = datetime.now(UTC) - timedelta(minutes=4)

    answer = await post_raw(ingest, body, signed_headers(body, SIGNING_SECRET, at=four_minutes_ago))

    assert answer.status_code == 202


async def test_incomplete_signature_headers(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response())
    headers = signed_headers(body, SIGNING_SECRET)
    del headers["webhook-timestamp"]

    answer = await post_raw(ingest, body, headers)

    assert_unauthorized(answer, "webhook-id, webhook-timestamp and webhook-signature")


async def test_replayed_webhook_id_is_refused(ingest: Ingest) -> None:
    body = orjson.dumps(valid_response(response_id="r-replayed"))
    headers = signed_headers(body, SIGNING_SECRET)

    first = await post_raw(ingest, body, headers)
    replay = await post_raw(ingest, body, headers)

    assert first.status_code == 202
    assert_unauthorized(replay, "already accepted")
    assert len(await ingest.landed(2, wait_s=1.0)) == 1


async def test_refused_webhook_may_be_retried_with_the_same_id(ingest: Ingest) -> None:
    """Standard Webhooks senders retry with the same id; only an accepted id is spent."""
    invalid = orjson.dumps(valid_response(score=11))
    fixed = orjson.dumps(valid_response(response_id="r-fixed"))

    first = await post_raw(
        ingest, invalid, signed_headers(invalid, SIGNING_SECRET, webhook_id="m1")
    )
    retry = await post_raw(ingest, fixed, signed_headers(fixed, SIGNING_SECRET, webhook_id="m1"))

    assert first.status_code == 422
    assert retry.status_code == 202


async def test_bearer_and_signature_sources_are_separate(ingest: Ingest) -> None:
    """A webhook-id accepted from one source does not block another source's same id."""
    body_api = orjson.dumps(valid_response(response_id="r-a"))
    body_other = orjson.dumps(valid_response(response_id="r-b"))

    from_api = await post_raw(
        ingest, body_api, signed_headers(body_api, SIGNING_SECRET, webhook_id="same")
    )
    from_other = await post_raw(
        ingest, body_other, signed_headers(body_other, OTHER_SIGNING_SECRET, webhook_id="same")
    )

    assert from_api.status_code == from_other.status_code == 202
