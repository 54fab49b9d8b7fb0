"""The delivery loop: claim due deliveries, send them concurrently, record every attempt.

What is committed when
----------------------
1. **Claim** (one transaction): up to `batch` due rows are locked with `FOR UPDATE SKIP LOCKED`
   (replicas take disjoint rows), leased (`in_flight` until `now() + lease`) and given send
   slots by their destinations' pace. Rows whose slot is beyond the pacing window go back,
   uncounted. Committed before anything is sent.
2. **Send**: each claimed delivery waits for its slot, then renders and sends in its own task
   (at most `max_in_flight` per process).
3. **Record** (group commit): finished attempts are written together, one statement per batch
   (a transaction when vendor retry hints or permanent failures add more), gathered for
   `record_linger` after the first one and once the previous write finished: the new status
   (sent / pending again at the backoff or the vendor's hint / dead), the attempt row, and what
   the destination learnt.

Crash windows, honestly
-----------------------
* Dies before 3 for a delivery that was sent: its lease expires and it is sent again (an
  attempt with outcome `lease_expired` marks it). Email carries the same `Message-ID` and
  webhooks the same `webhook-id`, so receivers can tell; Slack and Telegram have no idempotency
  key, so the recipient may see it twice. The window is one send plus the record linger and one
  group commit (tens of milliseconds); SIGKILL inside it is the only way to repeat a message.
* Dies before 1 commits, or between 1 and 2: the lease expires and the delivery is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

from npsloop_alerts.alerting.service import delivery_id_for
from npsloop_alerts.delivery.backoff import RetryPolicy
from npsloop_alerts.delivery.dispatch import Dispatcher
from npsloop_alerts.delivery.listener import NotifyListener
from npsloop_alerts.delivery.metrics import DeliveryMetrics
from npsloop_alerts.delivery.models import DeliveryPurpose
from npsloop_alerts.delivery.pacing import PacedItem, PacingPolicy, plan_slots
from npsloop_alerts.delivery.repository import (
    NOTIFY_CHANNEL,
    AttemptRow,
    ClaimedRow,
    DeliveryRepository,
)
from npsloop_alerts.delivery.settings import DeliverySettings
from npsloop_alerts.delivery.settle import Settlement, settle
from npsloop_alerts.delivery.work import ClaimedDelivery, SendOutcome, Verdict
from npsloop_alerts.lifecycle import BackgroundLoop
from npsloop_alerts.routing.rules import Channel
from npsloop_shared.driver_db import DRIVER_ERRORS, DriverPool

log = logging.getLogger(__name__)

MAX_RESULTS_PER_WRITE = 1000
MAX_DB_BACKOFF_SECONDS = 5.0
MIN_IDLE_SECONDS = 0.01
# NOTIFYs from elsewhere (mostly other replicas' decide steps) wake the loop at most this often.
OTHERS_NOTIFY_INTERVAL_SECONDS = 0.1


class Unknown(enum.Enum):
    """When the next delivery falls due is not known yet: the database must be asked."""

    TOKEN = 0


UNKNOWN: Final = Unknown.TOKEN


@dataclass(frozen=True, slots=True)
class LoopConfig:
    batch_size: int
    max_in_flight: int
    lease_seconds: float
    send_timeout: float
    poll_interval: float
    record_linger: float
    stats_interval: float
    disable_after: int
    retry: RetryPolicy
    pacing: PacingPolicy

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> LoopConfig:
        window = settings.delivery_rate_window_seconds
        timeout = settings.delivery_send_timeout_seconds
        if settings.delivery_lease_seconds <= window + timeout:
            raise ValueError(
                "NPSLOOP_DELIVERY_LEASE_SECONDS must exceed the pacing window plus the send "
                "timeout, or healthy sends would be taken over by another replica"
            )
        return cls(
            batch_size=settings.delivery_claim_batch_size,
            max_in_flight=settings.delivery_max_in_flight,
            lease_seconds=settings.delivery_lease_seconds,
            send_timeout=timeout,
            poll_interval=settings.delivery_poll_interval_seconds,
            record_linger=settings.delivery_record_linger_seconds,
            stats_interval=settings.delivery_metrics_interval_seconds,
            disable_after=settings.delivery_disable_after_permanent_failures,
            retry=RetryPolicy.from_settings(settings),
            pacing=PacingPolicy.from_settings(settings),
        )


class DeliveryLoop(BackgroundLoop):
    name = "delivery-loop"

    def __init__(
        self,
        database: DriverPool,
        *,
        database_url: str,
        dispatcher: Dispatcher,
        config: LoopConfig,
        metrics: DeliveryMetrics,
        own_notifiers: Collection[int] = (),
    ) -> None:
        """`own_notifiers`: server process ids whose NOTIFYs need no claim, because whoever
        sent them calls `wake()` as well (the decide step of this process, after its commit;
        acting on both would make the second claim find nothing)."""
        super().__init__(stop_grace=config.send_timeout + 10)
        self._database = database
        self._dispatcher = dispatcher
        self._config = config
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._listener = NotifyListener(
            database_url,
            NOTIFY_CHANNEL,
            self._wake.set,
            ignore_from=own_notifiers,
            min_interval=OTHERS_NOTIFY_INTERVAL_SECONDS,
        )
        self._results: asyncio.Queue[SendOutcome | None] = asyncio.Queue()
        self._tasks: dict[asyncio.Task[None], ClaimedDelivery] = {}
        self._sending: set[uuid.UUID] = set()
        # Set while the claim loop waits for a send to finish because every slot is taken.
        self._waiting_for_room = False

    async def stop(self) -> None:
        self._wake.set()
        await super().stop()

    def wake(self) -> None:
        """Look for due work now (the decide step calls this after committing deliveries)."""
        self._wake.set()

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_results(), name="delivery-results")
        stats = asyncio.create_task(self._refresh_stats(), name="delivery-stats")
        await self._listener.ensure()
        try:
            await self._claim_loop()
        finally:
            await self._listener.close()
            await self._drain()
            self._results.put_nowait(None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), self._config.send_timeout)
            for task in (writer, stats):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- claiming -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = 0.1
        while not self.stopping:
            capacity = self._config.max_in_flight - len(self._tasks)
            if capacity <= 0:
                self._waiting_for_room = True
                await self._idle(self._config.poll_interval)
                self._waiting_for_room = False
                continue
            requested = min(capacity, self._config.batch_size)
            self._wake.clear()
            try:
                claimed, next_due_in = await self._claim(requested)
            except DRIVER_ERRORS as exc:
                log.warning("claiming deliveries failed", extra={"error": repr(exc)})
                await self.pause(backoff)
                backoff = min(backoff * 2, MAX_DB_BACKOFF_SECONDS)
                continue
            backoff = 0.1
            for delivery in claimed:
                self._spawn(delivery)
            if len(claimed) < requested:
                await self._idle(await self._next_wait(next_due_in))

    async def _claim(self, limit: int) -> tuple[list[ClaimedDelivery], float | Unknown | None]:
        """The deliveries to send now, and seconds until the next one left waiting falls due
        (None: none waits), which the claim knows only when it found something."""
        token = uuid.uuid4()
        async with self._database.transaction() as connection:
            repository = DeliveryRepository(connection)
            claimed = await repository.claim_due(limit, token, self._config.lease_seconds)
            if not claimed.rows:
                return [], UNKNOWN
            await self._note_lease_expiries(repository, claimed.rows)
            deliveries, deferred_for = await self._pace(
                repository, [row.delivery for row in claimed.rows], token
            )
        waits = [w for w in (claimed.next_due_in, deferred_for) if w is not None]
        return deliveries, min(waits, default=None)

    async def _note_lease_expiries(
        self, repository: DeliveryRepository, rows: Sequence[ClaimedRow]
    ) -> None:
        expired = [row.delivery for row in rows if row.lease_expired]
        if not expired:
            return
        now = datetime.now(UTC)
        await repository.add_attempts(
            [
                AttemptRow(
                    delivery_id=d.id,
                    number=d.attempts - 1,
                    operation=d.operation.value,
                    outcome="lease_expired",
                    started_at=now,
                    latency_ms=None,
                    vendor_status=None,
                    error_class="LeaseExpired",
                    error_reason="lease_expired",
                    error_message="the previous holder stopped before recording the outcome",
                    retry_after=None,
                    rendered_revision=None,
                )
                for d in expired
            ]
        )
        self._metrics.lease_expired.inc(len(expired))

    async def _pace(
        self, repository: DeliveryRepository, deliveries: list[ClaimedDelivery], token: uuid.UUID
    ) -> tuple[list[ClaimedDelivery], float | None]:
        """The deliveries to send (each with its delay until its pace slot), and seconds until
        the first of those given back for a later slot falls due (None: none was)."""
        pacing = self._config.pacing
        items = [
            PacedItem(d.id, pacing.paces(Channel(d.channel), d.destination_key))
            for d in deliveries
            if not d.destination_disabled
        ]
        keys = [pace.key for item in items for pace in item.paces]
        states, db_now = await repository.lock_destinations(keys)
        if db_now is None:
            return deliveries, None
        plan = plan_slots(items, states, db_now, pacing.window)
        await repository.advance_destinations(plan.next_allowed_at)
        await repository.defer(token, plan.deferred_until)
        paced = []
        for delivery in deliveries:
            if delivery.id in plan.deferred_until:
                continue
            slot = plan.send_at.get(delivery.id)
            delay = (slot - db_now).total_seconds() if slot is not None else 0.0
            paced.append(replace(delivery, send_delay=max(delay, 0.0)))
        deferred_for = min(
            ((until - db_now).total_seconds() for until in plan.deferred_until.values()),
            default=None,
        )
        return paced, deferred_for

    async def _next_wait(self, due_in: float | Unknown | None) -> float:
        """Sleep until the next delivery falls due, at most the poll interval."""
        await self._listener.ensure()
        if isinstance(due_in, Unknown):
            try:
                async with self._database.connection() as connection:
                    due_in = await DeliveryRepository(connection).next_due_in()
            except DRIVER_ERRORS:
                return self._config.poll_interval
        if due_in is None:
            return self._config.poll_interval
        return min(self._config.poll_interval, max(due_in, MIN_IDLE_SECONDS))

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    # --- sending ------------------------------------------------------------------------------

    def _spawn(self, delivery: ClaimedDelivery) -> None:
        task = asyncio.create_task(self._deliver(delivery), name=f"delivery-{delivery.id}")
        self._tasks[task] = delivery
        self._metrics.in_process.set(len(self._tasks))
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        delivery = self._tasks.pop(task, None)
        if delivery is not None:
            self._sending.discard(delivery.id)
        self._metrics.in_process.set(len(self._tasks))
        if self._waiting_for_room:
            # Only then: new work wakes the loop itself (the decide step, NOTIFY, due times),
            # and a claim after every finished send would mostly find nothing.
            self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        if delivery.send_delay > 0:
            await asyncio.sleep(delivery.send_delay)
        self._sending.add(delivery.id)
        outcome = await self._dispatcher.perform(delivery)
        self._results.put_nowait(outcome)

    async def _drain(self) -> None:
        """Stopping: give back what has not started sending, let started sends finish."""
        waiting = {t: d for t, d in self._tasks.items() if d.id not in self._sending}
        for task in waiting:
            task.cancel()
        started = [t for t in self._tasks if t not in waiting]
        if started:
            await asyncio.wait(started, timeout=self._config.send_timeout + 1)
        if waiting:
            await asyncio.wait(list(waiting), timeout=1)
            await self._release(list(waiting.values()))

    async def _release(self, deliveries: Sequence[ClaimedDelivery]) -> None:
        now = datetime.now(UTC)
        by_token: dict[uuid.UUID, dict[uuid.UUID, datetime]] = {}
        for delivery in deliveries:
            by_token.setdefault(delivery.claim_token, {})[delivery.id] = now
        try:
            async with self._database.transaction() as connection:
                repository = DeliveryRepository(connection)
                for token, until in by_token.items():
                    await repository.defer(token, until)
        except DRIVER_ERRORS as exc:
            log.warning(
                "could not release deliveries; leases will expire", extra={"error": repr(exc)}
            )

    # --- recording ----------------------------------------------------------------------------

    async def _write_results(self) -> None:
        finished = False
        while not finished:
            batch: list[SendOutcome] = []
            item = await self._results.get()
            if item is not None and self._config.record_linger > 0:
                # Let the sends finishing meanwhile join this write (see `record_linger`).
                await asyncio.sleep(self._config.record_linger)
            while item is not None and len(batch) < MAX_RESULTS_PER_WRITE:
                batch.append(item)
                if self._results.empty():
                    break
                item = self._results.get_nowait()
            finished = item is None
            if batch:
                await self._record_until_stored(batch)

    async def _record_until_stored(self, batch: list[SendOutcome]) -> None:
        """Outcomes are the only record that a message left: keep trying to store them."""
        backoff = 0.1
        settlement = settle(batch, self._config.retry)
        while True:
            try:
                await self._record(settlement)
            except DRIVER_ERRORS as exc:
                log.warning("recording delivery outcomes failed", extra={"error": repr(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_DB_BACKOFF_SECONDS)
                continue
            self._count(batch, settlement)
            return

    async def _record(self, settlement: Settlement) -> None:
        if not settlement.retry_hints and not settlement.failure_counts:
            # The usual batch is one statement, atomic by itself: no BEGIN/COMMIT round trips.
            async with self._database.connection() as connection:
                await DeliveryRepository(connection).record(
                    settlement.results, settlement.attempts, settlement.reset_keys
                )
        else:
            await self._record_with_consequences(settlement)
        if any(result.status == "pending" for result in settlement.results):
            self._wake.set()  # a retry is due at its backoff: the claim loop learns when

    async def _record_with_consequences(self, settlement: Settlement) -> None:
        """Outcomes with vendor retry hints or permanent failures: recorded together with
        what they imply for their destinations, in one transaction."""
        cap = self._config.retry.max_retry_after_seconds
        async with self._database.transaction() as connection:
            repository = DeliveryRepository(connection)
            await repository.record(settlement.results, settlement.attempts, settlement.reset_keys)
            await repository.honour_retry_hints(
                {key: min(hint, cap) for key, hint in settlement.retry_hints.items()}
            )
            await self._disable_failing(repository, settlement)

    async def _disable_failing(
        self, repository: DeliveryRepository, settlement: Settlement
    ) -> None:
        runs = await repository.count_failures(settlement.failure_counts)
        due = {
            key: f"{failures} consecutive permanent failures ({settlement.failure_reasons[key]})"
            for key, (failures, disabled) in runs.items()
            if failures >= self._config.disable_after and not disabled
        }
        for key in await repository.disable(due):
            self._metrics.destinations_disabled.inc()
            outcome = settlement.first_failure[key]
            told = await repository.add_notice(
                delivery_id_for(
                    outcome.delivery.alert_id,
                    f"notice:{key}",
                    "email",
                    DeliveryPurpose.DESTINATION_DISABLED.value,
                ),
                outcome.delivery.alert_id,
                _notice_details(outcome, runs[key][0]),
            )
            log.warning(
                "destination disabled",
                extra={"destination": key, "manager_told": told, "failures": runs[key][0]},
            )
            if not told:
                self._metrics.notices_unaddressed.inc()

    def _count(self, batch: Sequence[SendOutcome], settlement: Settlement) -> None:
        for outcome, result in zip(batch, settlement.results, strict=True):
            channel = outcome.delivery.channel
            if outcome.verdict is Verdict.SENT:
                label = "edited" if outcome.operation.value == "edit" else "sent"
            else:
                label = "retried" if result.status == "pending" else "dead"
            self._metrics.deliveries.labels(channel, label).inc()
            if outcome.latency_ms is not None:
                self._metrics.attempt_seconds.labels(channel).observe(outcome.latency_ms / 1000)

    # --- metrics ------------------------------------------------------------------------------

    async def _refresh_stats(self) -> None:
        while True:
            try:
                async with self._database.transaction() as connection:
                    stats = await DeliveryRepository(connection).queue_stats()
                self._metrics.observe_queue(stats)
            except DRIVER_ERRORS as exc:
                log.debug("queue stats unavailable", extra={"error": repr(exc)})
            await asyncio.sleep(self._config.stats_interval)


def _notice_details(outcome: SendOutcome, failures: int) -> dict[str, object]:
    delivery = outcome.delivery
    return {
        "destination_key": delivery.destination_key,
        "channel": delivery.channel,
        "recipient_id": delivery.recipient_id,
        "recipient_name": delivery.recipient_name,
        "reason": outcome.error_reason,
        "failures": failures,
        "account_id": delivery.alert.account_id,
        "account_name": delivery.alert.account_name,
    }
