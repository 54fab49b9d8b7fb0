"""The fast path answers POST /v1/responses, yet the endpoint is fully documented in OpenAPI,
and the documented FastAPI route gives exactly the same answers (it calls the same core)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.ingest.conftest import BEARER, Ingest, valid_response

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

JSON = {**BEARER, "Content-Type": "application/json"}


@pytest.fixture
async def documented(ingest: Ingest) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the FastAPI app alone: requests take the documented route, not the front."""
    transport = httpx.ASGITransport(app=ingest.front.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield client


CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("accepted single", orjson.dumps(valid_response(response_id="same")), JSON),
    (
        "accepted batch",
        orjson.dumps({"responses": [valid_response(response_id=f"b{i}") for i in range(3)]}),
        JSON,
    ),
    ("invalid", orjson.dumps(valid_response(score=12, kind="x")), JSON),
    ("malformed", b"{", JSON),
    ("unauthorized", orjson.dumps(valid_response()), {"Content-Type": "application/json"}),
    ("wrong media type", b"{}", {**BEARER, "Content-Type": "text/plain"}),
    ("too large", b" " * (1024 * 1024 + 1), JSON),
]


@pytest.mark.parametrize(("body", "headers"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_fast_and_documented_paths_answer_alike(
    ingest: Ingest, documented: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> None:
    fast = await ingest.client.post("/v1/responses", content=body, headers=headers)
    slow = await documented.post("/v1/responses", content=body, headers=headers)

    assert fast.status_code == slow.status_code
    assert fast.content == slow.content
    for header in ("content-type", "content-length", "www-authenticate", "retry-after"):
        assert fast.headers.get(header) == slow.headers.get(header)


async def test_both_paths_produce_identical_events(
    ingest: Ingest, documented: httpx.AsyncClient
) -> None:
    body = orjson.dumps(valid_response(response_id="twin"))

    fast = await ingest.client.post("/v1/responses", content=body, headers=JSON)
    slow = await documented.post("/v1/responses", content=body, headers=JSON)

    assert fast.status_code == slow.status_code == 202
    first, second = await ingest.landed(2)
    assert first.key == second.key
    assert first.headers["ce_id"] == second.headers["ce_id"]
    assert {k: v for k, v in first.value.items() if k != "received_at"} == {
        k: v for k, v in second.value.items() if k != "received_at"
    }


@pytest.fixture
async def openapi(ingest: Ingest) -> dict[str, Any]:
    answer = await ingest.client.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/components/schemas/")
    schema: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


async def test_openapi_documents_request_bodies_single_and_batch(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/v1/responses"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    refs = [option["$ref"] for option in content["schema"]["oneOf"]]
    single, batch = (resolve(openapi, ref) for ref in refs)

    assert set(single["required"]) == {
        "response_id",
        "kind",
        "account_id",
        "score",
        "submitted_at",
    }
    assert single["properties"]["score"] == {
        "maximum": 10,
        "minimum": 0,
        "title": "Score",
        "type": "integer",
    }
    assert single["properties"]["comment"]["anyOf"][0]["maxLength"] == 5000
    assert single["properties"]["attributes"]["maxProperties"] == 32
    assert batch["properties"]["responses"]["maxItems"] == 500
    assert set(content["examples"]) == {"single", "batch"}
    # Every $ref in the document resolves.
    text = orjson.dumps(openapi).decode()
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in openapi["components"]["schemas"], name


async def test_openapi_documents_auth_and_every_answer(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/v1/responses"]["post"]

    assert operation["security"] == [{"bearerToken": []}, {"standardWebhooks": []}]
    schemes = openapi["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerToken"]["description"],
    }
    assert schemes["standardWebhooks"]["name"] == "webhook-signature"
    assert set(operation["responses"]) == {"202", "400", "401", "413", "415", "422", "503"}
    accepted = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert set(resolve(openapi, accepted["$ref"])["properties"]) == {"accepted", "ids"}
    for status in ("400", "401", "413", "415", "422", "503"):
        problem = operation["responses"][status]["content"]["application/problem+json"]
        assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert "errors" in openapi["components"]["schemas"]["Problem"]["properties"]


async def test_operations_endpoints_are_documented(openapi: dict[str, Any]) -> None:
    assert {"/healthz", "/readyz", "/metrics"} <= set(openapi["paths"])


async def test_docs_page_is_served(ingest: Ingest) -> None:
    answer = await ingest.client.get("/docs")

    assert answer.status_code == 200
    assert "swagger" in answer.text.lower()
