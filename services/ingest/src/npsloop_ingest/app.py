"""Composition root: `create_app` builds and wires every part; the lifespan connects to Kafka.

The service starts answering at once. If Kafka is not there yet it keeps trying in the background
(creating its topics, then starting the producer) instead of crashing; until it succeeds
`/readyz` and `POST /v1/responses` answer 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import version
from typing import Any, Final

from aiokafka.errors import KafkaError
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from npsloop_ingest.auth.replay import ReplayGuard
from npsloop_ingest.auth.sources import SourceAuthenticator
from npsloop_ingest.front import IngestFront
from npsloop_ingest.health.endpoints import health_router
from npsloop_ingest.health.readiness import KafkaReadiness
from npsloop_ingest.metrics import IngestMetrics
from npsloop_ingest.responses.endpoints import responses_router
from npsloop_ingest.responses.intake import ResponseIntake
from npsloop_ingest.responses.schemas import SECURITY_SCHEMES, component_schemas
from npsloop_ingest.settings import IngestSettings
from npsloop_shared.errors import install_problem_handlers
from npsloop_shared.kafka.producer import BrokerUnavailable, KafkaProducer
from npsloop_shared.kafka.topics import TopicCreationFailed, ensure_topics
from npsloop_shared.logging import configure_logging
from npsloop_shared.runtime import settle_garbage_collector

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_SECONDS: Final = 5.0

DESCRIPTION = """\
Receives NPS survey responses from survey tools and puts each on Kafka
(`npsloop.responses.v1`, keyed by `account_id`) — answering `202` only once Kafka has it.
"""


def create_app(settings: IngestSettings) -> IngestFront:
    producer = KafkaProducer(
        settings.kafka_bootstrap_servers,
        client_id=settings.kafka_client_id,
        ack_timeout=settings.ingest_ack_timeout,
        retry_after_seconds=settings.ingest_retry_after,
        linger_ms=settings.ingest_linger_ms,
    )
    metrics = IngestMetrics(settings.ingest_sources)
    authenticator = SourceAuthenticator(
        settings.ingest_sources,
        replay_guard=ReplayGuard(
            tolerance_seconds=settings.ingest_signature_tolerance,
            max_entries=settings.ingest_replay_cache_size,
        ),
        tolerance_seconds=settings.ingest_signature_tolerance,
    )
    intake = ResponseIntake(
        producer=producer,
        authenticator=authenticator,
        metrics=metrics,
        topic=settings.ingest_topic,
        max_body_bytes=settings.ingest_max_body_bytes,
        source_ids=settings.ingest_sources,
    )
    readiness = KafkaReadiness(producer, cache_seconds=settings.ingest_readiness_cache_seconds)

    api = FastAPI(
        title="npsloop ingest",
        version=version("npsloop-ingest"),
        description=DESCRIPTION,
        lifespan=_lifespan(settings, producer),
    )
    install_problem_handlers(api)
    api.include_router(responses_router(intake))
    api.include_router(
        health_router(readiness, metrics, retry_after_seconds=settings.ingest_retry_after)
    )
    _document_components(api)
    return IngestFront(intake, api)


def app_from_environment() -> IngestFront:
    """The uvicorn factory (`npsloop-ingest`): settings from the environment, JSON logs."""
    settings = IngestSettings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    settle_garbage_collector()
    return app


def _lifespan(
    settings: IngestSettings, producer: KafkaProducer
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        connecting = asyncio.create_task(connect_kafka(settings, producer))
        # Usually Kafka is there and this returns within a second: serve ready from the start.
        await asyncio.wait([connecting], timeout=settings.ingest_startup_wait_seconds)
        try:
            yield
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
            await producer.stop()

    return lifespan


async def connect_kafka(settings: IngestSettings, producer: KafkaProducer) -> None:
    """Create the topics when absent and start the producer, retrying until both worked."""
    delay = 0.2
    while True:
        try:
            created = await ensure_topics(
                settings.kafka_bootstrap_servers,
                settings.topic_specs(),
                client_id=f"{settings.kafka_client_id}-admin",
            )
            await producer.start()
        except (KafkaError, OSError, TimeoutError, BrokerUnavailable, TopicCreationFailed) as exc:
            log.warning(
                "kafka not usable yet, retrying",
                extra={"error": type(exc).__name__, "detail": str(exc), "retry_in_s": delay},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)
        else:
            log.info("kafka connected", extra={"topics_created": created})
            return


def _document_components(api: FastAPI) -> None:
    """Add the request models and auth schemes the hand-written route docs refer to."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title,
                version=api.version,
                description=api.description,
                routes=api.routes,
            )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(component_schemas())
            components["securitySchemes"] = SECURITY_SCHEMES
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
