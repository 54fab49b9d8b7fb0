"""Values PostgreSQL cannot store or compare (NUL characters, numbers and dates past a column's
range) are the client's mistake: 422 problem+json, never a 500, and nothing is stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

PROBLEM = "application/problem+json"
NUL = "\x00"


@pytest.mark.parametrize(
    ("path", "params", "detail"),
    [
        ("/v1/alerts", {"account_id": NUL}, "NUL character"),
        ("/v1/alerts", {"owner_id": f"ana{NUL}"}, "NUL character"),
        ("/v1/alerts", {"source": NUL}, "NUL character"),
        ("/v1/deliveries", {"recipient_id": NUL}, "NUL character"),
        # +14:00 puts the first instant of year 1 before year 1 in UTC.
        ("/v1/alerts", {"created_after": "0001-01-01T00:00:00+14:00"}, "out of range"),
    ],
    ids=["alert account", "alert owner", "alert source", "delivery recipient", "date"],
)
async def test_a_filter_the_database_cannot_compare_is_422(
    client: httpx.AsyncClient, path: str, params: dict[str, str], detail: str
) -> None:
    response = await client.get(path, params=params)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert detail in response.json()["detail"]
    assert response.json()["instance"] == path


async def test_an_offset_past_postgresqls_bigint_is_refused_by_name(
    client: httpx.AsyncClient,
) -> None:
    refused = await client.get("/v1/people", params={"offset": 2**63})
    largest = await client.get("/v1/people", params={"offset": 2**63 - 1})

    assert refused.status_code == 422
    assert [error["pointer"] for error in refused.json()["errors"]] == ["/query/offset"]
    assert largest.status_code == 200
    assert largest.json()["items"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/people/ana", {"name": f"Ana{NUL}", "email": "ana@example.com"}),
        ("POST", "/v1/routing/preview", {"account_id": NUL, "score": 3}),
    ],
    ids=["person name", "preview account"],
)
async def test_nul_text_in_a_body_is_422_and_stores_nothing(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any]
) -> None:
    response = await client.request(method, path, json=body)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "NUL character" in response.json()["detail"]
    assert (await client.get("/v1/people/ana")).status_code == 404
