"""Probes and metrics: `/healthz` (the process works), `/readyz` (it can serve), `/metrics`."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from npsloop_alerts.kafka import KafkaConnection
from npsloop_alerts.lifecycle import Component
from npsloop_shared.db import ping
from npsloop_shared.errors import PROBLEM_CONTENT_TYPE

CHECK_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["operations"])


def _json(body: dict[str, Any], status: int = 200) -> Response:
    media_type = "application/json" if status < 400 else PROBLEM_CONTENT_TYPE
    return Response(orjson.dumps(body), status_code=status, media_type=media_type)


def _unavailable(detail: str, checks: dict[str, str]) -> Response:
    body = {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": detail,
        "checks": checks,
    }
    return _json(body, 503)


@router.get("/healthz", summary="Liveness: every background component is running")
async def healthz(request: Request) -> Response:
    components: tuple[Component, ...] = request.state.components
    checks = {c.name: "ok" if c.healthy() else "stopped" for c in components}
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return _unavailable(f"not healthy: {', '.join(failed)}", checks)
    return _json({"status": "ok", "checks": checks})


@router.get("/readyz", summary="Readiness: PostgreSQL answers and Kafka is connected")
async def readyz(request: Request) -> Response:
    kafka: KafkaConnection = request.state.kafka
    checks = {
        "database": await _database_check(request),
        "kafka": "ok" if await kafka.producer.ping(CHECK_TIMEOUT_SECONDS) else "unreachable",
    }
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return _unavailable(f"not ready: {', '.join(failed)}", checks)
    return _json({"status": "ready", "checks": checks})


async def _database_check(request: Request) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await ping(request.state.engine)
    except Exception:
        return "unreachable"
    return "ok"


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
