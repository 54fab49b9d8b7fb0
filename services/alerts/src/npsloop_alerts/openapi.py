"""OpenAPI documentation helpers: the problem+json shape every error response uses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from npsloop_shared.errors import PROBLEM_CONTENT_TYPE

_DESCRIPTIONS = {
    400: "Bad request.",
    401: "Missing or invalid admin token.",
    403: "The signed link is not valid or has expired.",
    404: "No such resource.",
    409: "Conflicts with the current state (the detail says why).",
    422: "Validation failed; `errors` lists every invalid field as a JSON pointer.",
    503: "A dependency is unavailable, or the admin API is disabled.",
}


class FieldProblem(BaseModel):
    pointer: str = Field(description="RFC 6901 JSON pointer to the field, e.g. `/owner_id`.")
    detail: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details (`application/problem+json`)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a path operation: each status documented as problem+json."""
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS.get(status, "Error."),
            "content": {PROBLEM_CONTENT_TYPE: {}},
        }
        for status in statuses
    }


ADMIN_ERRORS = (401, 503)
