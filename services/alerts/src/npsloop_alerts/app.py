"""The alerts FastAPI app. The lifespan is the composition root: it creates every resource and
background component, hands them out through the typed lifespan state, and stops them in reverse.

To add a component (a consumer, a delivery loop…): build it in `build_components`; it receives
the shared `Resources`. Topics the process writes go in `topics_to_ensure`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypedDict

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from npsloop_alerts.alerting.components import alerting_components, alerting_topics
from npsloop_alerts.alerting.endpoints import router as alerts_router
from npsloop_alerts.alerting.page import router as alert_page_router
from npsloop_alerts.delivery.endpoints import router as deliveries_router
from npsloop_alerts.directory.endpoints import router as directory_router
from npsloop_alerts.directory.relay import DIRECTORY_OUTBOX
from npsloop_alerts.health import router as health_router
from npsloop_alerts.kafka import KafkaConnection
from npsloop_alerts.lifecycle import Component
from npsloop_alerts.outbox import OutboxRelay
from npsloop_alerts.routing.endpoints import router as routing_router
from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.contracts import ACCOUNTS_TOPIC
from npsloop_shared.db import (
    SessionMaker,
    create_engine,
    create_sessionmaker,
    install_database_problem_handlers,
)
from npsloop_shared.errors import install_problem_handlers
from npsloop_shared.kafka.producer import KafkaProducer
from npsloop_shared.kafka.topics import TopicSpec, compacted_topic
from npsloop_shared.runtime import settle_garbage_collector

APPLICATION_NAME = "npsloop-alerts"


@dataclass(frozen=True, slots=True)
class Resources:
    """What components are built from; created once per process by the lifespan."""

    settings: AlertsSettings
    engine: AsyncEngine
    sessionmaker: SessionMaker
    kafka: KafkaConnection


class AlertsState(TypedDict):
    """Lifespan state; endpoints read it as `request.state.<key>`."""

    settings: AlertsSettings
    engine: AsyncEngine
    sessionmaker: SessionMaker
    kafka: KafkaConnection
    components: tuple[Component, ...]


def topics_to_ensure(settings: AlertsSettings) -> list[TopicSpec]:
    """Topics this process writes; created at start-up if missing."""
    return [
        compacted_topic(
            ACCOUNTS_TOPIC,
            partitions=settings.accounts_topic_partitions,
            replication_factor=settings.accounts_topic_replication_factor,
        ),
        *alerting_topics(settings),
    ]


def build_components(resources: Resources) -> list[Component]:
    """Background components in start order (stopped in reverse). Add new ones here."""
    settings = resources.settings
    return [
        resources.kafka,
        OutboxRelay(
            DIRECTORY_OUTBOX,
            resources.sessionmaker,
            resources.kafka,
            poll_interval=settings.outbox_poll_interval_seconds,
            batch_size=settings.outbox_batch_size,
            retention=timedelta(hours=settings.outbox_retention_hours),
        ),
        *alerting_components(settings, resources.sessionmaker, resources.kafka),
    ]


def create_resources(settings: AlertsSettings) -> Resources:
    engine = create_engine(
        settings.database_url,
        application_name=APPLICATION_NAME,
        pool_size=settings.database_pool_size,
    )
    producer = KafkaProducer(
        settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-alerts",
        ack_timeout=settings.kafka_send_timeout_seconds,
    )
    kafka = KafkaConnection(settings.kafka_bootstrap_servers, producer, topics_to_ensure(settings))
    return Resources(settings, engine, create_sessionmaker(engine), kafka)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[AlertsState]:
    resources = create_resources(app.state.settings)
    components = build_components(resources)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(resources.engine.dispose)
        for component in components:
            await component.start()
            stack.push_async_callback(component.stop)
        if app.state.settle_gc_after_start:
            # After start-up, so the pools, caches and compiled templates just built are frozen
            # too: a full collection then walks only what the work itself keeps alive (measured
            # at 200 responses/s: 150-400 ms pauses every ~10 s before, the p99's worst part).
            settle_garbage_collector()
        yield AlertsState(
            settings=resources.settings,
            engine=resources.engine,
            sessionmaker=resources.sessionmaker,
            kafka=resources.kafka,
            components=tuple(components),
        )


def create_app(
    settings: AlertsSettings | None = None, *, settle_gc_after_start: bool = False
) -> FastAPI:
    """`settle_gc_after_start`: for the process's own server (`npsloop-alerts serve`), not for
    apps built in tests, as it freezes everything alive in the process."""
    settings = settings or AlertsSettings()
    app = FastAPI(
        title="npsloop alerts",
        version="1.0.0",
        summary="Routes NPS responses to account owners; admin API for the directory and rules.",
        lifespan=lifespan,
        openapi_tags=[
            {"name": "people", "description": "People and shared destinations alerts reach."},
            {"name": "accounts", "description": "Accounts and their owner, backup and manager."},
            {"name": "team", "description": "Team fallback and wins destination."},
            {"name": "rules", "description": "Routing rules, validated on write."},
            {"name": "alerts", "description": "Alerts: one per response, with deliveries."},
            {"name": "deliveries", "description": "Outbound messages, attempts, re-drive."},
            {"name": "operations", "description": "Health, readiness and metrics."},
        ],
    )
    app.state.settings = settings
    app.state.settle_gc_after_start = settle_gc_after_start
    install_problem_handlers(app)
    install_database_problem_handlers(app)
    app.include_router(health_router)
    app.include_router(directory_router)
    app.include_router(routing_router)
    app.include_router(alerts_router)
    app.include_router(alert_page_router)
    app.include_router(deliveries_router)
    return app
