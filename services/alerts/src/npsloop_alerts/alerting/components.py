"""Wiring of consume-and-decide and delivery into the alerts process (called by the lifespan).

Start order: work resources (channel clients, the hot paths' database connections), the delivery
loop, the responses consumer, the alert outbox relay; stop order is the reverse, so the consumer
stops taking records before the loop drains its in-flight sends, and the clients close last.

The decide step and the delivery loop run on asyncpg directly, each with its own `DriverPool`
(SQLAlchemy's execution layer would cost more CPU than their statements). Neither pings a
connection before use (a ping is a round trip, more than the work itself): a connection that
died fails its statement, and the record, claim or result is simply retried. The delivery loop
acts on NOTIFYs from other processes only: this one's decide step wakes it directly.
"""

from __future__ import annotations

from datetime import timedelta

from npsloop_alerts.alerting.directory_view import DirectoryView
from npsloop_alerts.alerting.handler import ResponseHandler
from npsloop_alerts.alerting.links import AlertLinks
from npsloop_alerts.alerting.metrics import alerting_metrics
from npsloop_alerts.alerting.relay import AlertOutboxRelay
from npsloop_alerts.alerting.service import AlertDecider, DeciderConfig
from npsloop_alerts.delivery.channels import ChannelProviders
from npsloop_alerts.delivery.dispatch import Dispatcher
from npsloop_alerts.delivery.loop import DeliveryLoop, LoopConfig
from npsloop_alerts.delivery.metrics import delivery_metrics
from npsloop_alerts.kafka import KafkaConnection
from npsloop_alerts.lifecycle import Component
from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.db import SessionMaker
from npsloop_shared.driver_db import DriverPool
from npsloop_shared.kafka.consumer import KafkaEventConsumer
from npsloop_shared.kafka.topics import TopicSpec, event_topic, with_dead_letter


class ResponsesConsumer:
    """Component around the shared consumers (members of group `npsloop-alerts`)."""

    name = "responses-consumer"

    def __init__(self, consumers: list[KafkaEventConsumer]) -> None:
        self.consumers = consumers

    async def start(self) -> None:
        for consumer in self.consumers:
            await consumer.start()

    async def stop(self) -> None:
        for consumer in self.consumers:
            await consumer.stop()

    def healthy(self) -> bool:
        return all(consumer.running for consumer in self.consumers)


class WorkResources:
    """Component owning the channel clients and the hot paths' connections; closes them last."""

    name = "alerting-resources"

    def __init__(self, providers: ChannelProviders, *databases: DriverPool) -> None:
        self.providers = providers
        self.databases = databases

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.providers.aclose()
        for database in self.databases:
            await database.close()

    def healthy(self) -> bool:
        return not self.providers.closed


def alerting_topics(settings: AlertsSettings) -> list[TopicSpec]:
    """Topics this feature writes: the responses DLQ (and the topic it reads), alerts.v1."""
    return [
        *with_dead_letter(event_topic(settings.alerts_responses_topic)),
        event_topic(settings.alerts_events_topic),
    ]


def alerting_components(
    settings: AlertsSettings, sessionmaker: SessionMaker, kafka: KafkaConnection
) -> list[Component]:
    """`sessionmaker` is the process's (the relay uses it); the hot paths get their own."""
    providers = ChannelProviders.from_settings(settings)
    decide_database = DriverPool(
        settings.database_url,
        application_name="npsloop-alerts-decide",
        max_size=settings.database_pool_size,
    )
    delivery_database = DriverPool(
        settings.database_url,
        application_name="npsloop-alerts-delivery",
        max_size=settings.database_pool_size,
    )
    loop = DeliveryLoop(
        delivery_database,
        database_url=settings.database_url,
        dispatcher=Dispatcher(
            providers,
            links=AlertLinks.from_settings(settings),
            send_timeout=settings.delivery_send_timeout_seconds,
        ),
        config=LoopConfig.from_settings(settings),
        metrics=delivery_metrics(),
        own_notifiers=decide_database.server_pids,
    )
    decider = AlertDecider(
        DirectoryView(settings.channel_config()),
        DeciderConfig(
            email_hold=timedelta(seconds=settings.alerts_email_hold_seconds),
            sla_policy=settings.alerts_sla_policy,
            events_topic=settings.alerts_events_topic,
        ),
    )
    metrics = alerting_metrics()
    handler = ResponseHandler(decide_database, decider, metrics, on_decided=loop.wake)
    consumers = [
        KafkaEventConsumer(
            topics=[settings.alerts_responses_topic],
            group_id=settings.alerts_consumer_group,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            handler=handler,
            batch_handler=handler.handle_batch,
            client_id=f"{settings.kafka_client_id}-alerts-{number}",
            tuning=settings.consumer_tuning(),
        )
        for number in range(settings.alerts_consumer_instances)
    ]
    relay = AlertOutboxRelay(
        sessionmaker,
        kafka,
        poll_interval=settings.outbox_poll_interval_seconds,
        batch_size=settings.outbox_batch_size,
        retention=timedelta(hours=settings.outbox_retention_hours),
        processed_event_retention=timedelta(days=settings.alerts_processed_event_retention_days),
        metrics=metrics,
    )
    return [
        WorkResources(providers, decide_database, delivery_database),
        loop,
        ResponsesConsumer(consumers),
        relay,
    ]
