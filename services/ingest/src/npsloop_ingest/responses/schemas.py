"""What `POST /v1/responses` answers, and the OpenAPI pieces that document it."""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from npsloop_shared.contracts import ResponseBatchIn, ResponseIn
from npsloop_shared.errors import PROBLEM_CONTENT_TYPE


class Accepted(BaseModel):
    """Every event of the request is durable in Kafka."""

    model_config = ConfigDict(frozen=True)

    accepted: int = Field(description="How many responses were accepted.")
    ids: list[str] = Field(
        description="The events' `ce_id`s, in request order. The same response, source and "
        "revision always gets the same id, so a retry is recognisable downstream."
    )


class FieldProblem(BaseModel):
    pointer: str = Field(
        description="RFC 6901 pointer into the request body, e.g. `/responses/3/score`."
    )
    detail: str
    type: str = Field(description="Machine-readable kind of problem, e.g. `int_type`.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = Field(
        default=None, description="Every invalid field (422 only)."
    )


SECURITY_SCHEMES: Final[dict[str, Any]] = {
    "bearerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The source's token from `NPSLOOP_INGEST_SOURCES`.",
    },
    "standardWebhooks": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-signature",
        "description": "Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds, within "
        "5 minutes of the server's clock) and `webhook-signature` (space-separated `v1,<base64>` "
        "HMAC-SHA256 entries over `<id>.<timestamp>.<body>`, keyed with the source's `whsec_` "
        "secret; several entries allow key rotation). An accepted `webhook-id` is refused if "
        "replayed.",
    },
}


def component_schemas() -> dict[str, Any]:
    """JSON Schemas of the request and problem models, as OpenAPI `components.schemas`."""
    _, top = models_json_schema(
        [(ResponseIn, "validation"), (ResponseBatchIn, "validation"), (Problem, "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = top["$defs"]
    return schemas


def _problem(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying the same request.",
                "schema": {"type": "integer"},
            }
        }
    return response


PROBLEM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: _problem("The body is not valid JSON."),
    401: _problem(
        "Missing or bad credentials: unknown token, signature that does not match, timestamp "
        "outside the tolerance, or a replayed webhook-id."
    ),
    413: _problem("The body exceeds the limit: 1 MiB unless `NPSLOOP_INGEST_MAX_BODY_BYTES` says."),
    415: _problem("The body is not `application/json`, or it is compressed (`Content-Encoding`)."),
    422: _problem(
        "Invalid responses; `errors` names every invalid field by JSON pointer. A batch is all or "
        "nothing: nothing was accepted."
    ),
    503: _problem(
        "Kafka did not acknowledge in time or is unavailable: nothing was accepted. Retry after "
        "`Retry-After` seconds; a retry yields the same ids.",
        retry_after=True,
    ),
}

_SINGLE_EXAMPLE: Final = {
    "response_id": "survey-81723",
    "kind": "transactional",
    "touchpoint": "delivery",
    "account_id": "acme-gmbh",
    "score": 4,
    "comment": "The parcel arrived two days late.",
    "submitted_at": "2026-11-20T09:30:00+01:00",
    "locale": "de-DE",
    "attributes": {"segment": "wholesale", "region": "DACH"},
}

REQUEST_BODY: Final[dict[str, Any]] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/ResponseIn"},
                    {"$ref": "#/components/schemas/ResponseBatchIn"},
                ]
            },
            "examples": {
                "single": {"summary": "One response", "value": _SINGLE_EXAMPLE},
                "batch": {
                    "summary": "A batch (up to 500, all or nothing)",
                    "value": {
                        "responses": [
                            _SINGLE_EXAMPLE,
                            {
                                "response_id": "nps-q4-5521",
                                "kind": "relational",
                                "account_id": "globex",
                                "score": 10,
                                "comment": None,
                                "submitted_at": "2026-11-20T08:00:00Z",
                            },
                        ]
                    },
                },
            },
        }
    },
}
