"""The documented `POST /v1/responses` route.

In production `IngestFront` answers this path before FastAPI sees it; this route exists so the
OpenAPI document describes the endpoint completely, and it calls the very same
`ResponseIntake.handle`, so whichever path serves a request, the answer is the same.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from npsloop_ingest.responses.intake import PATH, Reply, ResponseIntake
from npsloop_ingest.responses.schemas import PROBLEM_RESPONSES, REQUEST_BODY, Accepted

DESCRIPTION = """\
Accepts one canonical response, or `{"responses": [...]}` with up to 500 of them (all or nothing).

Authenticate with `Authorization: Bearer <token>` **or** a Standard Webhooks signature.

Answers `202` only after Kafka acknowledged every event (`acks=all`); `ids` are the events'
deterministic `ce_id`s. If Kafka does not acknowledge within `NPSLOOP_INGEST_ACK_TIMEOUT`
(5 s by default) the answer is `503` with `Retry-After`, and nothing was accepted.
"""


def responses_router(intake: ResponseIntake) -> APIRouter:
    router = APIRouter(tags=["responses"])

    @router.post(
        PATH,
        status_code=202,
        summary="Submit NPS responses",
        description=DESCRIPTION,
        response_model=Accepted,
        response_description="Every response is durable in Kafka.",
        responses=PROBLEM_RESPONSES,
        openapi_extra={
            "requestBody": REQUEST_BODY,
            "security": [{"bearerToken": []}, {"standardWebhooks": []}],
        },
    )
    async def post_responses(request: Request) -> Response:
        # The body is read from `receive` by the intake itself (size limit, signature bytes).
        return as_response(await intake.handle(request.scope["headers"], request.receive))

    return router


def as_response(reply: Reply) -> Response:
    response = Response(content=reply.body, status_code=reply.status)
    response.raw_headers = list(reply.headers)
    return response
