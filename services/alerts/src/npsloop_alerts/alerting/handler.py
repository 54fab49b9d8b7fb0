"""The Kafka record handler of group `npsloop-alerts` on `npsloop.responses.v1`.

Per record: decode (a record that breaks the contract raises `PermanentMessageError` and goes to
the DLQ), read the directory, then one atomic statement for the whole decision (an autocommit
asyncpg connection: the statement is its own transaction), committed before this returns.
The consumer wrapper commits the offset only after that, so a crash in between redelivers the
record and the `ce_id` dedupe makes the second pass a no-op.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from npsloop_alerts.alerting.metrics import AlertingMetrics
from npsloop_alerts.alerting.repository import AlertRepository
from npsloop_alerts.alerting.service import AlertDecider, DecideOutcome, DecideResult
from npsloop_shared.contracts import RESPONSE_RECEIVED_TYPE, ResponseReceived
from npsloop_shared.driver_db import DriverPool
from npsloop_shared.kafka.consumer import ConsumedRecord, PermanentMessageError
from npsloop_shared.kafka.dlq import describe_error

log = logging.getLogger(__name__)

_CHANGES_DELIVERIES = frozenset({DecideOutcome.CREATED, DecideOutcome.UPDATED})


def decode_response(record: ConsumedRecord) -> tuple[uuid.UUID, ResponseReceived]:
    """The CloudEvents id and the response, or `PermanentMessageError` saying what is wrong."""
    ce_type = record.header("ce_type")
    if ce_type is not None and ce_type.decode(errors="replace") != RESPONSE_RECEIVED_TYPE:
        raise PermanentMessageError(f"unexpected ce_type {ce_type[:100]!r} on a responses topic")
    if record.value is None:
        raise PermanentMessageError("record has no value")
    try:
        event = ResponseReceived.model_validate_json(record.value)
    except ValidationError as exc:
        raise PermanentMessageError(describe_error(exc)) from None
    ce_id = record.header("ce_id")
    if ce_id is None:
        # Ids are deterministic per (source, response, revision): derive the one ingest would set.
        return event.event_id, event
    try:
        return uuid.UUID(ce_id.decode()), event
    except (UnicodeDecodeError, ValueError):
        raise PermanentMessageError("ce_id header is not a UUID") from None


class ResponseHandler:
    def __init__(
        self,
        database: DriverPool,
        decider: AlertDecider,
        metrics: AlertingMetrics,
        *,
        on_decided: Callable[[], None] | None = None,
    ) -> None:
        # No transaction around the directory read: the writes are atomic by themselves (one
        # statement, or the repository's own transaction when a poll needs several).
        self._database = database
        self._decider = decider
        self._metrics = metrics
        # Wakes this process's delivery loop without waiting for the NOTIFY round trip.
        self._on_decided = on_decided

    async def __call__(self, record: ConsumedRecord) -> None:
        await self.handle_batch([record])

    async def handle_batch(self, records: Sequence[ConsumedRecord]) -> None:
        """Decide a poll's records together (one directory read, one atomic write).

        A record that breaks the contract raises before anything is written; the consumer then
        handles the records one at a time, dead-lettering that one.
        """
        events = [decode_response(record) for record in records]
        async with self._database.connection() as connection:
            results = await self._decider.decide_many(AlertRepository(connection), events)
        self._decided(results)

    def _decided(self, results: Sequence[DecideResult]) -> None:
        for result in results:
            self._count(result)
            log.debug(
                "response decided",
                extra={
                    "outcome": result.outcome.value,
                    "alert_id": str(result.alert_id),
                    "deliveries": result.deliveries_created,
                },
            )
        changed = any(result.outcome in _CHANGES_DELIVERIES for result in results)
        if self._on_decided is not None and changed:
            self._on_decided()

    def _count(self, result: DecideResult) -> None:
        self._metrics.responses.labels(result.outcome.value).inc()
        if result.outcome is DecideOutcome.CREATED:
            self._metrics.deliveries_planned.inc(result.deliveries_created)
            if not result.account_known:
                self._metrics.unknown_accounts.inc()
            self._metrics.unresolved_recipients.inc(result.unresolved_recipients)
