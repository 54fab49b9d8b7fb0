"""Every rule rejects with a precise RFC 9457 problem, and nothing reaches Kafka."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from npsloop_shared.contracts import MAX_REVISION
from tests.ingest.conftest import BEARER, Ingest, valid_response

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

PROBLEM = "application/problem+json"
NAIVE = datetime.now(UTC).replace(tzinfo=None, microsecond=0).isoformat()
TOO_FAR_AHEAD = (datetime.now(UTC) + timedelta(hours=25)).isoformat()
NEARLY_A_DAY_AHEAD = (datetime.now(UTC) + timedelta(hours=23)).isoformat()

INVALID_FIELDS: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, overrides, pointer, pydantic error type)
    ("score as string", {"score": "7"}, "/score", "int_type"),
    ("score as float", {"score": 7.0}, "/score", "int_type"),
    ("score as fraction", {"score": 7.5}, "/score", "int_type"),
    ("score as boolean", {"score": True}, "/score", "int_type"),
    ("score above 10", {"score": 11}, "/score", "less_than_equal"),
    ("score below 0", {"score": -1}, "/score", "greater_than_equal"),
    ("score missing", {"score": None}, "/score", "int_type"),
    ("unknown kind", {"kind": "nps"}, "/kind", "enum"),
    (
        "transactional without touchpoint",
        {"touchpoint": None},
        "/touchpoint",
        "touchpoint_required",
    ),
    ("empty account_id", {"account_id": ""}, "/account_id", "string_too_short"),
    ("account_id of 129", {"account_id": "a" * 129}, "/account_id", "string_too_long"),
    ("empty response_id", {"response_id": ""}, "/response_id", "string_too_short"),
    ("response_id of 129", {"response_id": "r" * 129}, "/response_id", "string_too_long"),
    ("comment of 5,001", {"comment": "c" * 5001}, "/comment", "string_too_long"),
    ("naive submitted_at", {"submitted_at": NAIVE}, "/submitted_at", "timezone_aware"),
    (
        "submitted_at not a date",
        {"submitted_at": "yesterday"},
        "/submitted_at",
        "iso_8601_datetime",
    ),
    # pydantic alone would read these as Unix times; the contract is ISO 8601.
    (
        "submitted_at in Unix seconds",
        {"submitted_at": 1_700_000_000},
        "/submitted_at",
        "iso_8601_datetime",
    ),
    ("submitted_at in Unix ms", {"submitted_at": 1.7e12}, "/submitted_at", "iso_8601_datetime"),
    (
        "submitted_at as digits",
        {"submitted_at": "1700000000"},
        "/submitted_at",
        "iso_8601_datetime",
    ),
    ("revision below 0", {"revision": -1}, "/revision", "greater_than_equal"),
    # Consumers store it as a PostgreSQL integer; past 64 bits it could not even be encoded.
    ("revision of 2**31", {"revision": 2**31}, "/revision", "less_than_equal"),
    ("revision of 10**30", {"revision": 10**30}, "/revision", "less_than_equal"),
    (
        "submitted_at 25 h ahead",
        {"submitted_at": TOO_FAR_AHEAD},
        "/submitted_at",
        "submitted_at_in_future",
    ),
    ("33 attributes", {"attributes": {f"k{i}": "v" for i in range(33)}}, "/attributes", "too_long"),
    (
        "attribute value of 257",
        {"attributes": {"plan": "p" * 257}},
        "/attributes/plan",
        "string_too_long",
    ),
    (
        "attribute value not a string",
        {"attributes": {"seats": 12}},
        "/attributes/seats",
        "string_type",
    ),
    ("unknown field", {"nps": 9}, "/nps", "extra_forbidden"),
    ("NUL in comment", {"comment": "late\x00"}, "/comment", "nul_character"),
    ("NUL in attribute", {"attributes": {"plan": "p\x00"}}, "/attributes", "nul_character"),
    (
        "respondent email invalid",
        {"respondent": {"email": "not-an-email"}},
        "/respondent/email",
        "value_error",
    ),
]


def problem_pointers(answer: httpx.Response) -> dict[str, str]:
    return {error["pointer"]: error["type"] for error in answer.json()["errors"]}


@pytest.fixture
async def untouched(ingest: Ingest) -> AsyncIterator[Ingest]:
    """The test must leave the topic empty: every rejection claims nothing."""
    yield ingest
    assert await ingest.landed(1, wait_s=0.5) == []


@pytest.mark.parametrize(
    ("overrides", "pointer", "error_type"),
    [case[1:] for case in INVALID_FIELDS],
    ids=[case[0] for case in INVALID_FIELDS],
)
async def test_invalid_field_is_named_by_pointer(
    untouched: Ingest, overrides: dict[str, Any], pointer: str, error_type: str
) -> None:
    body = valid_response(**overrides)
    if overrides.get("score", 0) is None:
        del body["score"]
        error_type = "missing"

    answer = await untouched.post(body)

    assert answer.status_code == 422
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["status"] == 422
    assert problem["type"].endswith("/validation-failed")
    assert problem["instance"] == "/v1/responses"
    assert problem_pointers(answer) == {pointer: error_type}


async def test_boundaries_are_accepted(ingest: Ingest) -> None:
    body = valid_response(
        response_id="r" * 128,
        account_id="a" * 128,
        comment="c" * 5000,
        score=0,
        revision=MAX_REVISION,
        submitted_at=NEARLY_A_DAY_AHEAD,
        attributes={f"k{i}": "v" * 256 for i in range(32)},
    )

    answer = await ingest.post(body)

    assert answer.status_code == 202, answer.text
    assert len(await ingest.landed(1)) == 1


async def test_text_spelling_out_a_nul_escape_is_not_a_nul(ingest: Ingest) -> None:
    # The JSON holds an escaped backslash then "u0000": six characters, no NUL.
    answer = await ingest.post(valid_response(comment="see \\u0000 in the log"))

    assert answer.status_code == 202, answer.text
    [landed] = await ingest.landed(1)
    assert landed.value["comment"] == "see \\u0000 in the log"


async def test_every_invalid_field_is_reported_at_once(untouched: Ingest) -> None:
    answer = await untouched.post(
        valid_response(score="ten", kind="other", account_id="", comment="c" * 5001)
    )

    assert answer.status_code == 422
    assert problem_pointers(answer) == {
        "/score": "int_type",
        "/kind": "enum",
        "/account_id": "string_too_short",
        "/comment": "string_too_long",
    }
    assert answer.json()["detail"] == "4 fields are invalid; nothing was accepted."


async def test_batch_pointer_names_the_index(untouched: Ingest) -> None:
    batch = [valid_response(response_id=f"r-{i}") for i in range(5)]
    batch[3]["score"] = "high"
    batch[4]["touchpoint"] = None

    answer = await untouched.post({"responses": batch})

    assert answer.status_code == 422
    assert problem_pointers(answer) == {
        "/responses/3/score": "int_type",
        "/responses/4/touchpoint": "touchpoint_required",
    }


async def test_batch_is_all_or_nothing(untouched: Ingest) -> None:
    batch = [valid_response(response_id=f"r-{i}") for i in range(499)]
    batch.append(valid_response(response_id="r-bad", score=11))

    answer = await untouched.post({"responses": batch})

    assert answer.status_code == 422
    assert problem_pointers(answer) == {"/responses/499/score": "less_than_equal"}


async def test_batch_of_501_is_refused(untouched: Ingest) -> None:
    batch = [valid_response(response_id=f"r-{i}") for i in range(501)]

    answer = await untouched.post({"responses": batch})

    assert answer.status_code == 422
    assert problem_pointers(answer) == {"/responses": "too_long"}


async def test_batch_of_500_is_accepted(ingest: Ingest) -> None:
    batch = [valid_response(response_id=f"r-{i}", account_id=f"a-{i % 7}") for i in range(500)]

    answer = await ingest.post({"responses": batch})

    assert answer.status_code == 202
    assert answer.json()["accepted"] == 500
    assert len(await ingest.landed(500)) == 500


async def test_empty_batch_is_refused(untouched: Ingest) -> None:
    answer = await untouched.post({"responses": []})

    assert answer.status_code == 422
    assert problem_pointers(answer) == {"/responses": "too_short"}


async def test_batch_member_after_another_field_is_still_a_batch(untouched: Ingest) -> None:
    answer = await untouched.post({"extra": 1, "responses": [valid_response()]})

    assert answer.status_code == 422
    assert problem_pointers(answer) == {"/extra": "extra_forbidden"}


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"score": 7', b"", b'{"comment": "\xff"}'], ids=repr
)
async def test_malformed_json_is_400(untouched: Ingest, body: bytes) -> None:
    answer = await untouched.client.post(
        "/v1/responses", content=body, headers={**BEARER, "Content-Type": "application/json"}
    )

    assert answer.status_code == 400
    assert answer.headers["content-type"] == PROBLEM
    assert answer.json()["detail"].startswith("The body is not valid JSON")


@pytest.mark.parametrize("body", [b"[]", b"7", b'"text"', b"null"], ids=repr)
async def test_json_that_is_not_an_object_is_422(untouched: Ingest, body: bytes) -> None:
    answer = await untouched.client.post(
        "/v1/responses", content=body, headers={**BEARER, "Content-Type": "application/json"}
    )

    assert answer.status_code == 422
    assert problem_pointers(answer) == {"/": "model_type"}


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
async def test_wrong_content_type_is_415(untouched: Ingest, content_type: str | None) -> None:
    headers = dict(BEARER)
    if content_type is not None:
        headers["Content-Type"] = content_type

    answer = await untouched.client.post("/v1/responses", content=b"{}", headers=headers)

    assert answer.status_code == 415
    assert answer.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate"])
async def test_an_encoded_body_is_415_naming_what_is_accepted(
    untouched: Ingest, coding: str
) -> None:
    body = gzip.compress(orjson.dumps(valid_response()))
    headers = {**BEARER, "Content-Type": "application/json", "Content-Encoding": coding}

    answer = await untouched.client.post("/v1/responses", content=body, headers=headers)

    assert answer.status_code == 415
    assert answer.headers["content-type"] == PROBLEM
    assert answer.headers["accept-encoding"] == "identity"
    assert "uncompressed" in answer.json()["detail"]


async def test_an_identity_coding_is_the_plain_body(ingest: Ingest) -> None:
    headers = {**BEARER, "Content-Type": "application/json", "Content-Encoding": "identity"}

    answer = await ingest.client.post(
        "/v1/responses", content=orjson.dumps(valid_response()), headers=headers
    )

    assert answer.status_code == 202, answer.text


async def test_declared_length_over_1_mib_is_413_before_reading(untouched: Ingest) -> None:
    body = b'{"comment": "' + b"x" * (1024 * 1024) + b'"}'

    answer = await untouched.client.post(
        "/v1/responses", content=body, headers={**BEARER, "Content-Type": "application/json"}
    )

    assert answer.status_code == 413
    assert answer.headers["content-type"] == PROBLEM


async def test_streamed_body_over_1_mib_is_413(untouched: Ingest) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the size is only known by counting what arrives.
        for _ in range(17):
            yield b" " * 65536

    answer = await untouched.client.post(
        "/v1/responses", content=chunks(), headers={**BEARER, "Content-Type": "application/json"}
    )

    assert answer.status_code == 413


async def test_streamed_body_under_the_limit_is_read_whole(ingest: Ingest) -> None:
    payload = httpx.Request("POST", "/", json=valid_response(response_id="r-stream")).content

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 16):
            yield payload[start : start + 16]

    answer = await ingest.client.post(
        "/v1/responses", content=chunks(), headers={**BEARER, "Content-Type": "application/json"}
    )

    assert answer.status_code == 202
    assert len(await ingest.landed(1)) == 1
