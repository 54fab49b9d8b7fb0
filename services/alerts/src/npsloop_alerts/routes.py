"""Route decorators for the admin API's resource operations, each with the responses it documents.

Every operation documents the admin errors (401, 503) as problem+json, plus what it can answer:
a list 422 (a bad limit, offset or filter), a lookup 404, an upsert 201 and 409/422, a delete
204 and 404. A list's or a lookup's response model is the endpoint's return annotation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response, status
from fastapi.types import DecoratedCallable
from pydantic import BaseModel

from npsloop_alerts.openapi import ADMIN_ERRORS, problem_responses


def list_route(
    router: APIRouter, path: str, **options: Any
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """GET of a paginated list (the endpoint returns a `Page[…]`)."""
    return router.get(path, responses=problem_responses(*ADMIN_ERRORS, 422), **options)


def get_route(
    router: APIRouter, path: str, **options: Any
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """GET of one resource by id: 404 when there is none."""
    return router.get(path, responses=problem_responses(*ADMIN_ERRORS, 404), **options)


def upsert_route(
    router: APIRouter, path: str, model: type[BaseModel], **options: Any
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """Idempotent PUT answering `model`: 200 when it replaced, 201 when it created (see
    `mark_created`), 409 on a conflict with other resources, 422 for an invalid body."""
    responses: dict[int | str, dict[str, Any]] = {
        201: {"model": model, "description": "Created."},
        **problem_responses(*ADMIN_ERRORS, 409, 422),
    }
    return router.put(path, response_model=model, responses=responses, **options)


def delete_route(
    router: APIRouter, path: str, *also: int, **options: Any
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """DELETE of one resource by id: 204, or 404 when there is none; `also` adds statuses (409)."""
    return router.delete(
        path,
        status_code=status.HTTP_204_NO_CONTENT,
        responses=problem_responses(*ADMIN_ERRORS, 404, *also),
        **options,
    )


def mark_created(response: Response, location: str) -> None:
    """The upsert created the resource: answer 201 with its `Location`."""
    response.status_code = status.HTTP_201_CREATED
    response.headers["Location"] = location
