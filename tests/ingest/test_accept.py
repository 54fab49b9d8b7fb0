"""Accepted responses land on Kafka with the right key, CloudEvents headers and body."""

from __future__ import annotations

import uuid
from datetime import datetime

import orjson
import pytest

from npsloop_shared.cloudevents import CloudEventAttributes
from npsloop_shared.contracts import (
    RESPONSE_RECEIVED_TYPE,
    ResponseReceived,
    response_event_id,
)
from tests.ingest.conftest import BEARER, OTHER_TOKEN, Ingest, valid_response

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]


async def test_single_response_is_on_the_topic_keyed_by_account_with_cloudevents_headers(
    ingest: Ingest,
) -> None:
    posted = valid_response(
        response_id="r-single",
        account_id="acme",
        score=3,
        respondent={"email": "pat@example.com", "name": "Pat"},
        attributes={"segment": "wholesale", "region": "DACH"},
        locale="de-DE",
    )

    answer = await ingest.post(posted)

    expected_id = str(response_event_id("api", "r-single", 0))
    assert answer.status_code == 202
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"accepted": 1, "ids": [expected_id]}
    [record] = await ingest.landed(1)
    assert record.key == b"acme"
    event = ResponseReceived.model_validate(record.value)
    assert event.response_id == "r-single"
    assert event.source == "api"
    assert event.account_id == "acme"
    assert event.score == 3
    assert event.bucket == "detractor"
    assert event.respondent is not None
    assert event.respondent.email == "pat@example.com"
    assert event.attributes == {"segment": "wholesale", "region": "DACH"}
    assert event.submitted_at == datetime.fromisoformat(posted["submitted_at"])
    attributes = CloudEventAttributes.from_headers(list(record.headers.items()))
    assert attributes.id == expected_id
    assert attributes.type == RESPONSE_RECEIVED_TYPE
    assert attributes.source == "npsloop/ingest/api"
    assert attributes.time == event.received_at
    assert record.headers["ce_specversion"] == b"1.0"
    assert record.headers["content-type"] == b"application/json"


async def test_batch_is_accepted_whole_in_order_with_one_id_per_response(ingest: Ingest) -> None:
    batch = [
        valid_response(response_id=f"r-batch-{i}", account_id=f"acct-{i % 2}", score=i)
        for i in range(5)
    ]

    answer = await ingest.post({"responses": batch})

    assert answer.status_code == 202
    ids = answer.json()["ids"]
    assert answer.json()["accepted"] == 5
    assert ids == [str(response_event_id("api", f"r-batch-{i}", 0)) for i in range(5)]
    landed = await ingest.landed(5)
    assert len(landed) == 5
    by_id = {r.headers["ce_id"].decode(): r for r in landed}
    assert set(by_id) == set(ids)
    for i, event_id in enumerate(ids):
        assert by_id[event_id].key == f"acct-{i % 2}".encode()
        assert by_id[event_id].value["score"] == i
    # One account's responses share a partition and keep the batch's order there.
    for account in (b"acct-0", b"acct-1"):
        mine = [r for r in landed if r.key == account]
        assert len({r.partition for r in mine}) == 1
        assert [r.value["response_id"] for r in mine] == sorted(
            (r.value["response_id"] for r in mine), key=lambda rid: int(rid.rsplit("-", 1)[1])
        )


async def test_the_same_response_posted_twice_carries_the_same_ce_id_twice(
    ingest: Ingest,
) -> None:
    response = valid_response(response_id="r-twice")

    first = await ingest.post(response)
    second = await ingest.post(response)

    assert first.status_code == second.status_code == 202
    assert first.json()["ids"] == second.json()["ids"]
    landed = await ingest.landed(2)
    assert [r.headers["ce_id"] for r in landed] == [first.json()["ids"][0].encode()] * 2


async def test_a_new_revision_is_a_new_event(ingest: Ingest) -> None:
    first = await ingest.post(valid_response(response_id="r-rev", revision=0))
    edited = await ingest.post(valid_response(response_id="r-rev", revision=1, score=9))

    assert first.json()["ids"] != edited.json()["ids"]
    assert edited.json()["ids"] == [str(response_event_id("api", "r-rev", 1))]


async def test_sources_get_distinct_ids_for_the_same_response_id(ingest: Ingest) -> None:
    via_api = await ingest.post(valid_response(response_id="shared-id"))
    via_other = await ingest.post(
        valid_response(response_id="shared-id"), {"Authorization": f"Bearer {OTHER_TOKEN}"}
    )

    assert via_api.status_code == via_other.status_code == 202
    assert via_api.json()["ids"] != via_other.json()["ids"]
    landed = await ingest.landed(2)
    assert {r.value["source"] for r in landed} == {"api", "other"}
    assert {r.headers["ce_source"] for r in landed} == {
        b"npsloop/ingest/api",
        b"npsloop/ingest/other",
    }


async def test_relational_response_needs_no_touchpoint_and_ids_are_uuids(ingest: Ingest) -> None:
    answer = await ingest.post(
        valid_response(kind="relational", touchpoint=None, comment=None, score=10)
    )

    assert answer.status_code == 202
    assert uuid.UUID(answer.json()["ids"][0]).version == 5
    [record] = await ingest.landed(1)
    assert record.value["bucket"] == "promoter"
    assert record.value["touchpoint"] is None
    assert record.value["comment"] is None


async def test_json_with_charset_is_json(ingest: Ingest) -> None:
    answer = await ingest.client.post(
        "/v1/responses",
        content=orjson.dumps(valid_response(response_id="r-charset")),
        headers={**BEARER, "Content-Type": "application/json; charset=utf-8"},
    )

    assert answer.status_code == 202
