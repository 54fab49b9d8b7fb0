"""Contract tests: the JSON Schema of every event (and of ingest's input) is pinned in
`tests/shared/snapshots/`, and the hot-path encoders agree with the models.

A schema change fails here with a diff. If the change is additive (a new optional field), run
`NPSLOOP_UPDATE_SNAPSHOTS=1 pytest tests/shared/test_contracts.py` and commit the snapshot;
anything else needs a new `.v2` topic beside the old one (see DESIGN.md).
"""

from __future__ import annotations

import difflib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from npsloop_shared.contracts import (
    CE_ID_NAMESPACE,
    AccountUpserted,
    ResponseBatchIn,
    ResponseIn,
    ResponseReceived,
    encode_response_received,
    response_event_id,
    response_event_id_text,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"
CONTRACTS: dict[str, type[BaseModel]] = {
    "ResponseReceived.v1": ResponseReceived,
    "AccountUpserted.v1": AccountUpserted,
    "ResponseIn": ResponseIn,
    "ResponseBatchIn": ResponseBatchIn,
}


def rendered(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_json_schema_matches_snapshot(name: str) -> None:
    current = rendered(CONTRACTS[name].model_json_schema())
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("NPSLOOP_UPDATE_SNAPSHOTS") == "1":
        path.write_text(current)
    assert path.exists(), f"no snapshot for {name}: run with NPSLOOP_UPDATE_SNAPSHOTS=1"
    pinned = path.read_text()
    if current != pinned:
        diff = "".join(
            difflib.unified_diff(
                pinned.splitlines(keepends=True),
                current.splitlines(keepends=True),
                fromfile=f"snapshots/{name}.json (pinned)",
                tofile=f"{name} (current model)",
            )
        )
        pytest.fail(
            f"The JSON Schema of {name} changed. Additive (optional field)? Update the snapshot "
            f"with NPSLOOP_UPDATE_SNAPSHOTS=1. Otherwise publish a .v2.\n{diff}",
            pytrace=False,
        )


def test_response_received_keeps_the_design_field_names() -> None:
    assert set(ResponseReceived.model_fields) == {
        "response_id",
        "revision",
        "source",
        "kind",
        "touchpoint",
        "account_id",
        "score",
        "bucket",
        "comment",
        "respondent",
        "submitted_at",
        "received_at",
        "locale",
        "attributes",
    }


def test_consumers_ignore_fields_added_later() -> None:
    event = ResponseReceived.from_input(
        ResponseIn.model_validate(_input()), source="api", received_at=datetime.now(UTC)
    )
    newer = {**event.model_dump(mode="json"), "sentiment": "negative"}

    assert ResponseReceived.model_validate(newer) == event


def _input(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "response_id": "r-1",
        "kind": "transactional",
        "touchpoint": "onboarding",
        "account_id": "acme",
        "score": 8,
        "submitted_at": "2026-11-20T09:30:00.250+01:00",
    }
    values.update(overrides)
    return values


ENCODER_CASES = [
    _input(),
    _input(kind="relational", touchpoint=None, comment=None, score=0),
    _input(
        comment='Ünïcødé ✓ "quoted" <b>html</b>',
        respondent={"email": "pat@example.com", "name": "Pat", "external_id": "u-9"},
        locale="pt-BR",
        attributes={"segment": "wholesale", "plan": "pro"},
        revision=3,
        score=10,
    ),
    _input(respondent={"name": "Only a name"}, submitted_at="2026-11-20T09:30:00Z"),
]


@pytest.mark.parametrize("values", ENCODER_CASES)
def test_fast_encoder_agrees_with_the_model(values: dict[str, Any]) -> None:
    item = ResponseIn.model_validate(values)
    received_at = datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=UTC)

    encoded = encode_response_received(item, source="api", received_at=received_at)

    expected = ResponseReceived.from_input(item, source="api", received_at=received_at)
    assert ResponseReceived.model_validate_json(encoded) == expected
    assert set(json.loads(encoded)) == set(ResponseReceived.model_fields)


def test_encoded_times_keep_their_instant() -> None:
    item = ResponseIn.model_validate(_input(submitted_at="2026-11-20T09:30:00+05:30"))
    received_at = datetime(2026, 11, 22, 8, 0, tzinfo=timezone(timedelta(hours=-3)))

    decoded = json.loads(encode_response_received(item, source="api", received_at=received_at))

    assert datetime.fromisoformat(decoded["submitted_at"]) == item.submitted_at
    assert datetime.fromisoformat(decoded["received_at"]) == received_at


@pytest.mark.parametrize(
    ("source", "response_id", "revision"),
    [("api", "r-1", 0), ("typeform-eu", "x" * 128, 7), ("api", "ü/€\x00", 10**9), ("", "r", 0)],
)
def test_event_id_is_uuid5_of_source_response_and_revision(
    source: str, response_id: str, revision: int
) -> None:
    expected = uuid.uuid5(CE_ID_NAMESPACE, f"{source}\x1f{response_id}\x1f{revision}")

    assert response_event_id(source, response_id, revision) == expected
    assert response_event_id_text(source, response_id, revision) == str(expected)


def test_event_id_is_pinned_and_distinguishes_each_part() -> None:
    # Pinned: changing the namespace or the formula would give redelivered responses new ids
    # and defeat every consumer's dedupe.
    assert str(response_event_id("api", "r-1", 0)) == "1bca3ded-1745-5b13-aa2d-91cbe6a14f5b"
    variants = {
        response_event_id("api", "r-1", 0),
        response_event_id("api2", "r-1", 0),
        response_event_id("api", "r-2", 0),
        response_event_id("api", "r-1", 1),
    }
    assert len(variants) == 4
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert response_event_id("ab", "c", 0) != response_event_id("a", "bc", 0)


@pytest.mark.parametrize(
    ("extra", "pointer"),
    [
        ({"comment": "late\x00again"}, ("comment",)),
        ({"response_id": "r\x00"}, ("response_id",)),
        ({"attributes": {"plan": "gold\x00"}}, ("attributes",)),
        ({"respondent": {"name": "Ana\x00"}}, ("respondent", "name")),
    ],
)
def test_nul_characters_are_refused_because_postgresql_text_cannot_store_them(
    extra: dict[str, Any], pointer: tuple[str, ...]
) -> None:
    payload = {
        "response_id": "r-1",
        "kind": "relational",
        "account_id": "acme",
        "score": 4,
        "submitted_at": "2026-11-01T10:00:00+00:00",
        **extra,
    }
    with pytest.raises(ValidationError) as raised:
        ResponseIn.model_validate(payload)
    assert [(error["loc"], error["type"]) for error in raised.value.errors()] == [
        (pointer, "nul_character")
    ]
