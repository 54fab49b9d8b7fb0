"""Long-running parts of the alerts process and how the lifespan starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from typing import Protocol

log = logging.getLogger(__name__)

DEFAULT_STOP_GRACE_SECONDS = 10.0


class Component(Protocol):
    """Something the lifespan starts (in list order) and stops (in reverse order)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def healthy(self) -> bool:
        """False once the component can no longer do its job (`/healthz` reports it)."""
        ...


class BackgroundLoop(ABC):
    """A component whose work is one `run()` coroutine, asked to finish by `stop()`.

    `run()` should loop until `self.stopping` and wait with `await self.pause(seconds)`, which
    returns early when a stop is requested. A stop waits `stop_grace` seconds, then cancels.
    """

    name: str = "background-loop"

    def __init__(self, *, stop_grace: float = DEFAULT_STOP_GRACE_SECONDS) -> None:
        self._stop_requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop_grace = stop_grace

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def start(self) -> None:
        self._stop_requested.clear()
        self._task = asyncio.create_task(self._run_logged(), name=self.name)

    async def stop(self) -> None:
        self._stop_requested.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), self._stop_grace)
        except TimeoutError:
            log.warning(
                "component did not stop in time; cancelling", extra={"component": self.name}
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:  # noqa: S110 - already logged by _run_logged
            pass

    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def pause(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when a stop was requested meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)
        return self.stopping

    @abstractmethod
    async def run(self) -> None: ...

    async def _run_logged(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("component crashed", extra={"component": self.name})
            raise
