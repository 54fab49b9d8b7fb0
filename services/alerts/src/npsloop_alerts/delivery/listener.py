"""LISTEN on a PostgreSQL channel with a dedicated asyncpg connection, calling back on NOTIFY.

A lost connection is not fatal (the loop also polls); `ensure()` reconnects when called.
NOTIFYs sent by the backends in `ignore_from` are not passed on (their sender wakes the loop
itself, sooner).
"""

from __future__ import annotations

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
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._channel = channel
        self._on_notify = on_notify
        self._ignore_from = ignore_from  # read on every NOTIFY: a live collection may grow
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
        self._on_notify()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                connection.terminate()

    def _notified(self, _connection: object, sender_pid: int, *_: object) -> None:
        if sender_pid not in self._ignore_from:
            self._on_notify()
