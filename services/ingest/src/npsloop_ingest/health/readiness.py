"""Readiness: can this replica get events acknowledged right now?

Ready means the producer is connected and a metadata request to Kafka returns a broker within a
second. The answer is cached briefly, so a probe storm (or a tight load-balancer check) costs at
most one metadata request per cache period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from npsloop_shared.kafka.producer import KafkaProducer

PROBE_SECONDS = 1.0


class KafkaReadiness:
    def __init__(
        self,
        producer: KafkaProducer,
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._ready = False
        self._valid_until = float("-inf")
        self._probing = asyncio.Lock()

    async def is_ready(self) -> bool:
        if self._clock() < self._valid_until:
            return self._ready
        async with self._probing:
            if self._clock() >= self._valid_until:  # nobody probed while we waited
                self._ready = await self._producer.ping(PROBE_SECONDS)
                self._valid_until = self._clock() + self._cache_seconds
        return self._ready
