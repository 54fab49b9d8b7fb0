"""Request validation errors and raised `NpsloopError`s leave as RFC 9457 problem+json."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from npsloop_shared.errors import NotFound, install_problem_handlers


class Item(BaseModel):
    score: Annotated[int, Field(ge=0, le=10)]
    counts: dict[str, int] = {}


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/items")
    async def create(items: list[Item], limit: Annotated[int, Query(ge=1)] = 1) -> int:
        return len(items)

    @app.get("/items/{item_id}")
    async def get(item_id: str) -> int:
        raise NotFound(f"No item {item_id}.")

    @app.get("/broken")
    async def broken() -> int:
        raise RuntimeError("secret detail of our own bug")

    return app


async def _request(method: str, url: str, body: object = None) -> httpx.Response:
    # As a server does: an error escaping the app is answered, not raised into the client.
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, url, json=body)


async def test_every_invalid_field_is_a_json_pointer() -> None:
    body = [{"score": 3}, {"score": 11, "counts": {"a/b~c": "many"}}]
    answer = await _request("POST", "/items?limit=0", body)

    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert (problem["type"], problem["title"], problem["instance"]) == (
        "https://npsloop.dev/problems/validation-failed",
        "Unprocessable Content",
        "/items",
    )
    pointers = {error["pointer"]: error["type"] for error in problem["errors"]}
    assert pointers == {
        "/body/1/score": "less_than_equal",
        "/body/1/counts/a~1b~0c": "int_parsing",  # RFC 6901 escapes `/` and `~`
        "/query/limit": "greater_than_equal",
    }


async def test_a_raised_error_carries_its_status_and_detail() -> None:
    answer = await _request("GET", "/items/x1")

    assert answer.status_code == 404
    assert answer.json() == {
        "type": "https://npsloop.dev/problems/not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "No item x1.",
        "instance": "/items/x1",
    }


async def test_our_own_failure_is_a_problem_that_says_nothing_of_it() -> None:
    answer = await _request("GET", "/broken")

    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["title"] == "Internal Server Error"
    assert answer.json()["instance"] == "/broken"
    assert "secret detail" not in answer.text
