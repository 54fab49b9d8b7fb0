"""The process's Kafka connection: topics ensured, one idempotent producer, started in background.

The admin API keeps working while Kafka is away (directory changes wait in the outbox), so the
connection is made by a background task that retries; `/readyz` reports whether it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from npsloop_shared.kafka.producer import KafkaProducer
from npsloop_shared.kafka.topics import TopicCreationFailed, TopicSpec, ensure_topics

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_SECONDS = 5.0


class KafkaConnection:
    """Component: ensures `topics` exist, then starts `producer`; `connected` is set when both
    are done. Stopping flushes and closes the producer."""

    name = "kafka"

    def __init__(
        self, bootstrap_servers: str, producer: KafkaProducer, topics: Sequence[TopicSpec]
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.producer = producer
        self.topics = list(topics)
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="kafka-connect")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.producer.stop()
        self.connected.clear()

    def healthy(self) -> bool:
        # Connecting retries forever; only a crash of that task is unhealthy.
        task = self._task
        return task is not None and not (
            task.done() and not task.cancelled() and task.exception() is not None
        )

    async def wait_connected(self) -> None:
        await self.connected.wait()

    async def _connect(self) -> None:
        await self._ensure_topics()
        await self.producer.start_with_retry(MAX_RETRY_DELAY_SECONDS)
        self.connected.set()
        log.info("kafka connected", extra={"topics": [spec.name for spec in self.topics]})

    async def _ensure_topics(self) -> None:
        delay = 0.2
        while True:
            try:
                await ensure_topics(self.bootstrap_servers, self.topics)
            except (KafkaError, TimeoutError, OSError, TopicCreationFailed) as exc:
                log.warning("cannot ensure kafka topics yet", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)
            else:
                return
