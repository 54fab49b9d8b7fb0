"""Reading the delivery queue for the API and re-driving dead deliveries. Never commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from npsloop_alerts.delivery.models import Delivery, DeliveryAttempt, DeliveryStatus
from npsloop_shared.errors import Conflict, NotFound

# Re-driving also re-enables the destination: the operator says it has been fixed.
_REDRIVE = text(
    """
    WITH revived AS (
        UPDATE deliveries SET
            status = 'pending', attempts = 0, next_attempt_at = greatest(now(), not_before),
            dead_at = NULL, claim_token = NULL, updated_at = now()
        WHERE id = ANY(:ids) AND status = 'dead'
        RETURNING id, destination_key
    ), enabled AS (
        UPDATE delivery_destinations SET
            disabled_at = NULL, disabled_reason = NULL, consecutive_permanent_failures = 0,
            updated_at = now()
        WHERE key IN (SELECT destination_key FROM revived)
        RETURNING key
    )
    SELECT id, pg_notify('npsloop_deliveries', '') FROM revived
    """
).bindparams(bindparam("ids", type_=ARRAY(UUID(as_uuid=True))))


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    status: DeliveryStatus | None = None
    channel: str | None = None
    alert_id: uuid.UUID | None = None
    recipient_id: str | None = None
    purpose: str | None = None

    def apply(self, query: Select[Delivery]) -> Select[Delivery]:
        equal = {
            Delivery.status: self.status.value if self.status else None,
            Delivery.channel: self.channel,
            Delivery.alert_id: self.alert_id,
            Delivery.recipient_id: self.recipient_id,
            Delivery.purpose: self.purpose,
        }
        conditions = [column == value for column, value in equal.items() if value is not None]
        return query.where(*conditions)


class DeliveryService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self, where: DeliveryFilter, *, limit: int, offset: int
    ) -> tuple[Sequence[Delivery], int]:
        query = where.apply(select(Delivery))
        total = await self.session.scalar(
            where.apply(select(Delivery)).with_only_columns(func.count()).order_by(None)
        )
        page = query.order_by(Delivery.created_at.desc(), Delivery.id).limit(limit).offset(offset)
        return (await self.session.scalars(page)).all(), total or 0

    async def for_alert(self, alert_id: uuid.UUID) -> Sequence[Delivery]:
        query = (
            select(Delivery)
            .where(Delivery.alert_id == alert_id)
            .order_by(Delivery.created_at, Delivery.channel, Delivery.recipient_id)
        )
        return (await self.session.scalars(query)).all()

    async def get(self, delivery_id: uuid.UUID) -> Delivery:
        delivery = await self.session.get(Delivery, delivery_id, populate_existing=True)
        if delivery is None:
            raise NotFound(f"No delivery {delivery_id}.")
        return delivery

    async def attempts(self, delivery_id: uuid.UUID) -> Sequence[DeliveryAttempt]:
        query = (
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery_id)
            .order_by(DeliveryAttempt.id)
        )
        return (await self.session.scalars(query)).all()

    async def redrive(self, delivery_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Dead → pending now, attempts reset, destinations re-enabled; returns what changed."""
        if not delivery_ids:
            return []
        rows = await self.session.execute(_REDRIVE, {"ids": list(delivery_ids)})
        return [row.id for row in rows]

    async def redrive_one(self, delivery_id: uuid.UUID) -> Delivery:
        delivery = await self.get(delivery_id)
        if delivery.status != DeliveryStatus.DEAD:
            raise Conflict(f"Delivery {delivery_id} is {delivery.status}; only dead ones re-drive.")
        await self.redrive([delivery_id])
        return await self.get(delivery_id)

    async def dead_ids(self, where: DeliveryFilter, *, limit: int) -> list[uuid.UUID]:
        dead = DeliveryFilter(
            status=DeliveryStatus.DEAD,
            channel=where.channel,
            alert_id=where.alert_id,
            recipient_id=where.recipient_id,
            purpose=where.purpose,
        )
        query = dead.apply(select(Delivery)).with_only_columns(Delivery.id).limit(limit)
        return list(await self.session.scalars(query.order_by(Delivery.dead_at)))
