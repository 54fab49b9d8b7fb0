"""Admin API: `/v1/deliveries` (list, detail with every attempt) and the re-drive action."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from npsloop_alerts.auth import AdminAuth
from npsloop_alerts.delivery.models import DeliveryPurpose, DeliveryStatus
from npsloop_alerts.delivery.schemas import (
    DeliveryDetailOut,
    DeliveryOut,
    delivery_detail_out,
    delivery_out,
)
from npsloop_alerts.delivery.service import DeliveryFilter, DeliveryService
from npsloop_alerts.openapi import ADMIN_ERRORS, problem_responses
from npsloop_alerts.pagination import Page, Paging
from npsloop_alerts.routes import get_route, list_route
from npsloop_alerts.routing.rules import Channel
from npsloop_shared.db import DbSession

router = APIRouter(prefix="/v1", dependencies=[AdminAuth], tags=["deliveries"])


def delivery_filter(
    *,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    channel: Annotated[Channel | None, Query()] = None,
    alert_id: Annotated[uuid.UUID | None, Query()] = None,
    recipient_id: Annotated[str | None, Query(max_length=128)] = None,
    purpose: Annotated[DeliveryPurpose | None, Query()] = None,
) -> DeliveryFilter:
    return DeliveryFilter(
        status=status,
        channel=channel.value if channel else None,
        alert_id=alert_id,
        recipient_id=recipient_id,
        purpose=purpose.value if purpose else None,
    )


@list_route(
    router,
    "/deliveries",
    summary="List deliveries",
    description="Newest first. Filter by status (e.g. `dead` to find what needs a re-drive).",
)
async def list_deliveries(
    session: DbSession, paging: Paging, where: Annotated[DeliveryFilter, Depends(delivery_filter)]
) -> Page[DeliveryOut]:
    return await paging.fetch(partial(DeliveryService(session).page, where), delivery_out)


@get_route(router, "/deliveries/{delivery_id}", summary="Get a delivery with every attempt")
async def get_delivery(delivery_id: uuid.UUID, session: DbSession) -> DeliveryDetailOut:
    service = DeliveryService(session)
    delivery = await service.get(delivery_id)
    return delivery_detail_out(delivery, list(await service.attempts(delivery_id)))


@router.post(
    "/deliveries/{delivery_id}/redrive",
    summary="Re-drive a dead delivery",
    description=(
        "Puts a `dead` delivery back in the queue, due now, with its attempts reset, and "
        "re-enables its destination if repeated permanent failures had disabled it. "
        "Answers 409 for a delivery that is not dead."
    ),
    response_model=DeliveryOut,
    responses=problem_responses(*ADMIN_ERRORS, 404, 409),
)
async def redrive_delivery(delivery_id: uuid.UUID, session: DbSession) -> DeliveryOut:
    return delivery_out(await DeliveryService(session).redrive_one(delivery_id))
