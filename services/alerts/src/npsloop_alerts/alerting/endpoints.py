"""Admin API: `/v1/alerts` (list with filters and pagination) and one alert with its deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from npsloop_alerts.alerting.models import Alert
from npsloop_alerts.alerting.schemas import AlertDetailOut, AlertOut
from npsloop_alerts.auth import AdminAuth
from npsloop_alerts.delivery.schemas import delivery_out
from npsloop_alerts.delivery.service import DeliveryService
from npsloop_alerts.pagination import Page, Paging
from npsloop_alerts.routes import get_route, list_route
from npsloop_shared.contracts import AlertStatus, Bucket
from npsloop_shared.db import DbSession
from npsloop_shared.errors import NotFound

router = APIRouter(prefix="/v1", dependencies=[AdminAuth], tags=["alerts"])


@dataclass(frozen=True, slots=True)
class AlertFilter:
    account_id: str | None = None
    bucket: Bucket | None = None
    status: AlertStatus | None = None
    owner_id: str | None = None
    source: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        equal = {
            Alert.account_id: self.account_id,
            Alert.bucket: self.bucket.value if self.bucket else None,
            Alert.status: self.status.value if self.status else None,
            Alert.owner_id: self.owner_id,
            Alert.source: self.source,
        }
        found += [column == value for column, value in equal.items() if value is not None]
        if self.created_after is not None:
            found.append(Alert.created_at >= self.created_after)
        if self.created_before is not None:
            found.append(Alert.created_at < self.created_before)
        return found


def alert_filter(
    *,
    account_id: Annotated[str | None, Query(max_length=128)] = None,
    bucket: Annotated[Bucket | None, Query()] = None,
    status: Annotated[AlertStatus | None, Query()] = None,
    owner_id: Annotated[str | None, Query(max_length=128)] = None,
    source: Annotated[str | None, Query(max_length=128)] = None,
    created_after: Annotated[datetime | None, Query()] = None,
    created_before: Annotated[datetime | None, Query()] = None,
) -> AlertFilter:
    return AlertFilter(account_id, bucket, status, owner_id, source, created_after, created_before)


async def alerts_page(
    session: AsyncSession, where: AlertFilter, *, limit: int, offset: int
) -> tuple[Sequence[Alert], int]:
    """Alerts matching `where`, newest first, and how many match."""
    conditions = where.conditions()
    total = await session.scalar(select(func.count()).select_from(Alert).where(*conditions))
    query = select(Alert).where(*conditions).order_by(Alert.created_at.desc(), Alert.id)
    rows = (await session.scalars(query.limit(limit).offset(offset))).all()
    return rows, total or 0


@list_route(
    router,
    "/alerts",
    summary="List alerts",
    description="Newest first. `created_after` is inclusive, `created_before` exclusive.",
)
async def list_alerts(
    session: DbSession, paging: Paging, where: Annotated[AlertFilter, Depends(alert_filter)]
) -> Page[AlertOut]:
    return await paging.fetch(partial(alerts_page, session, where), AlertOut.model_validate)


@get_route(router, "/alerts/{alert_id}", summary="Get an alert with its deliveries")
async def get_alert(alert_id: uuid.UUID, session: DbSession) -> AlertDetailOut:
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"No alert {alert_id}.")
    deliveries = await DeliveryService(session).for_alert(alert_id)
    return AlertDetailOut(
        **AlertOut.model_validate(alert).model_dump(),
        deliveries=[delivery_out(d) for d in deliveries],
    )
