"""Refusing a signed webhook that was already accepted (Standard Webhooks replay protection).

A signature stays valid while its timestamp is within the tolerance of the clock, so a captured
request could be replayed for that long. Each accepted `webhook-id` is therefore remembered for
twice the tolerance (a timestamp may be up to one tolerance ahead of the clock), in a bounded,
in-memory set per replica. Another replica may still accept the replay — that is safe, because
the replayed events carry the same `ce_id` and consumers dedupe on it. The bound only matters
under a flood: the oldest ids are forgotten first, with the same harmless outcome.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class ReplayGuard:
    def __init__(
        self,
        *,
        tolerance_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = 2 * tolerance_seconds
        self._max_entries = max_entries
        self._clock = clock
        # Insertion order is expiry order, because every entry lives for the same ttl.
        self._expiry: OrderedDict[tuple[str, str], float] = OrderedDict()

    def already_accepted(self, source_id: str, webhook_id: str) -> bool:
        self._forget_expired()
        return (source_id, webhook_id) in self._expiry

    def remember(self, source_id: str, webhook_id: str) -> None:
        """Call only once the request was accepted: a sender retries a refused one, same id."""
        key = (source_id, webhook_id)
        self._expiry.pop(key, None)
        self._expiry[key] = self._clock() + self._ttl
        while len(self._expiry) > self._max_entries:
            self._expiry.popitem(last=False)

    def __len__(self) -> int:
        self._forget_expired()
        return len(self._expiry)

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._expiry:
            oldest_key, expires_at = next(iter(self._expiry.items()))
            if expires_at > now:
                return
            del self._expiry[oldest_key]
