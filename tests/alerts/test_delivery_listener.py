"""The delivery loop's NOTIFY listener on a real PostgreSQL: it wakes on a NOTIFY, except one
sent by a backend it was told to ignore (this process's decide step, which wakes the loop
itself)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg  # type: ignore[import-untyped]

from npsloop_alerts.delivery.listener import NotifyListener
from npsloop_shared.driver_db import asyncpg_dsn


async def test_a_notify_wakes_the_listener_unless_its_sender_is_ignored(
    alerts_database_url: str,
) -> None:
    channel = f"test_wake_{uuid.uuid4().hex[:8]}"
    own = await asyncpg.connect(asyncpg_dsn(alerts_database_url))
    other = await asyncpg.connect(asyncpg_dsn(alerts_database_url))
    wakes: list[int] = []
    woken = asyncio.Event()

    def wake() -> None:
        wakes.append(1)
        woken.set()

    listener = NotifyListener(
        alerts_database_url, channel, wake, ignore_from={own.get_server_pid()}
    )
    try:
        await listener.ensure()
        assert wakes == [1]  # on (re)connect: whatever was notified meanwhile is looked for
        woken.clear()

        await own.execute(f"NOTIFY {channel}")
        # Notifications reach a listener in commit order: once the second has woken it, the
        # first has been seen (and ignored).
        await other.execute(f"NOTIFY {channel}")
        await asyncio.wait_for(woken.wait(), 10)
        await asyncio.sleep(0.1)
        assert wakes == [1, 1]
    finally:
        await listener.close()
        await own.close()
        await other.close()


async def test_notifies_in_quick_succession_are_passed_on_once_per_interval_and_none_is_lost(
    alerts_database_url: str,
) -> None:
    channel = f"test_wake_{uuid.uuid4().hex[:8]}"
    sender = await asyncpg.connect(asyncpg_dsn(alerts_database_url))
    wakes: list[float] = []
    loop = asyncio.get_running_loop()
    listener = NotifyListener(
        alerts_database_url, channel, lambda: wakes.append(loop.time()), min_interval=1.5
    )
    try:
        await listener.ensure()  # the wake on connect starts the first interval
        for _ in range(5):
            await sender.execute(f"NOTIFY {channel}")
        await asyncio.sleep(2.5)
        # The five came within the first interval: passed on once, when it ended.
        assert len(wakes) == 2
        assert wakes[1] - wakes[0] >= 1.4
    finally:
        await listener.close()
        await sender.close()
