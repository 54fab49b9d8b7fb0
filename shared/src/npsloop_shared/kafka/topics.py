"""Topic creation: each service makes sure the topics it writes exist, with the agreed settings.

Creation is idempotent: an existing topic is left exactly as it is (its partitions, replication
and retention are an operator's decision once it exists), so every replica can run this at start.

Retention defaults to 7 days: the services' PostgreSQL read models are the long-term record, and a
respondent's data must be erasable within a bounded time, which an unbounded log would prevent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS: Final = 6
DEFAULT_REPLICATION_FACTOR: Final = 1
DEFAULT_RETENTION: Final = timedelta(days=7)
DLQ_SUFFIX: Final = ".dlq"


class TopicCreationFailed(Exception):
    """The broker refused to create a topic for a reason other than it already existing."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = DEFAULT_REPLICATION_FACTOR
    config: dict[str, str] = field(default_factory=dict)

    def to_new_topic(self) -> NewTopic:
        return NewTopic(
            name=self.name,
            num_partitions=self.partitions,
            replication_factor=self.replication_factor,
            topic_configs=dict(self.config),
        )


def event_topic(
    name: str,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    retention: timedelta = DEFAULT_RETENTION,
) -> TopicSpec:
    """An append-only event topic with time-based retention (`retention.ms`)."""
    retention_ms = int(retention.total_seconds() * 1000)
    return TopicSpec(name, partitions, replication_factor, {"retention.ms": str(retention_ms)})


def with_dead_letter(spec: TopicSpec) -> tuple[TopicSpec, TopicSpec]:
    """The topic and its `<name>.dlq`, with the same partitions, replication and retention."""
    return spec, TopicSpec(
        spec.name + DLQ_SUFFIX, spec.partitions, spec.replication_factor, dict(spec.config)
    )


def compacted_topic(
    name: str,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
) -> TopicSpec:
    """Event-carried state (e.g. `npsloop.accounts.v1`): the latest value per key is kept forever,
    a tombstone (null value) deletes the key after `delete.retention.ms`."""
    return TopicSpec(name, partitions, replication_factor, {"cleanup.policy": "compact"})


async def ensure_topics(
    bootstrap_servers: str,
    specs: Sequence[TopicSpec],
    *,
    client_id: str = "npsloop-admin",
    request_timeout_s: float = 10.0,
) -> list[str]:
    """Create each topic in `specs` that does not exist yet; returns the names created now.

    Raises `KafkaError` (or `TimeoutError`) when the broker cannot be reached, and
    `TopicCreationFailed` when it refuses a topic for another reason than it already existing.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        request_timeout_ms=int(request_timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(request_timeout_s):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [spec for spec in specs if spec.name not in existing]
            if missing:
                response = await admin.create_topics([spec.to_new_topic() for spec in missing])
                _raise_for_refusals(response.topic_errors)
                await _wait_for_leaders(admin, [spec.name for spec in missing])
    finally:
        await admin.close()
    for spec in missing:
        log.info("topic created", extra={"topic": spec.name, "partitions": spec.partitions})
    return [spec.name for spec in missing]


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Until every partition of `names` has a leader, so the first produce does not bounce."""
    while True:
        described = await admin.describe_topics(names)
        if all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(p["leader"] >= 0 for p in topic["partitions"])
            for topic in described
        ):
            return
        await asyncio.sleep(0.05)


def _raise_for_refusals(topic_errors: Sequence[tuple[object, ...]]) -> None:
    refusals = []
    for topic, code, *message in topic_errors:
        error = for_code(code)
        if code == 0 or error is TopicAlreadyExistsError:
            continue  # another replica may have created it a moment ago
        detail = message[0] if message and message[0] else error.__name__
        refusals.append(f"{topic}: {detail}")
    if refusals:
        raise TopicCreationFailed("; ".join(refusals))
