"""LISTEN on a PostgreSQL channel with a dedicated asyncpg connection, calling back on NOTIFY.

A lost connection is not fatal (the loop also polls); `ensure()` reconnects when called.
NOTIFYs sent by the backends in `ignore_from` are not passed on (their sender wakes the loop
itself, sooner). The others are passed on at most once per `min_interval`: one arriving sooner
is passed on when the interval ends, never dropped. Most come from another replica's decide
step, whose own loop has usually claimed the work already, and a claim that finds nothing
still costs round trips.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from npsloop_shared.driver_db import asyncpg_dsn

log = logging.getLogger(__name__)


class NotifyListener:
    def __init__(
        self,
        database_url: str,
        channel: str,
        on_notify: Callable[[], None],
        *,
        ignore_from: Collection[int] = (),
        min_interval: float = 0.0,
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._channel = channel
        self._on_notify = on_notify
        self._ignore_from = ignore_from  # read on every NOTIFY: a live collection may grow
        self._min_interval = min_interval
        self._last_passed_on = float("-inf")  # loop time
        self._pending: asyncio.TimerHandle | None = None
        self._connection: Any = None

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def ensure(self) -> None:
        """Connect and LISTEN unless already listening; failures are logged, not raised."""
        if self.listening:
            return
        await self.close()
        try:
            connection = await asyncpg.connect(self._dsn, timeout=5)
            await connection.add_listener(self._channel, self._notified)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("cannot LISTEN yet; polling", extra={"error": type(exc).__name__})
            return
        self._connection = connection
        # Whatever was notified while we were not listening is found by the next claim.
        self._pass_on()

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                connection.terminate()

    def _notified(self, _connection: object, sender_pid: int, *_: object) -> None:
        if sender_pid in self._ignore_from or self._pending is not None:
            return  # ignored, or already due to be passed on
        loop = asyncio.get_running_loop()
        wait = self._last_passed_on + self._min_interval - loop.time()
        if wait > 0:
            self._pending = loop.call_later(wait, self._pass_on)
        else:
            self._pass_on()

    def _pass_on(self) -> None:
        self._pending = None
        self._last_passed_on = asyncio.get_running_loop().time()
        self._on_notify()
