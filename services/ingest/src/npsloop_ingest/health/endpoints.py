"""`/healthz` (the process answers), `/readyz` (Kafka reachable) and `/metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from npsloop_ingest.health.readiness import KafkaReadiness
from npsloop_ingest.metrics import METRICS_CONTENT_TYPE, IngestMetrics
from npsloop_ingest.responses.schemas import PROBLEM_RESPONSES
from npsloop_shared.errors import ServiceUnavailable


def health_router(
    readiness: KafkaReadiness, metrics: IngestMetrics, *, retry_after_seconds: int
) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: Kafka is reachable, so responses can be accepted",
        responses={503: PROBLEM_RESPONSES[503]},
    )
    async def readyz() -> dict[str, str]:
        if not await readiness.is_ready():
            raise ServiceUnavailable(
                "Kafka is not reachable; responses cannot be accepted right now.",
                headers={"Retry-After": str(retry_after_seconds)},
            )
        return {"status": "ready"}

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {METRICS_CONTENT_TYPE: {}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    return router
