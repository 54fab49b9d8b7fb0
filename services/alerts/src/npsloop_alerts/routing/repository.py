"""Routing-rule queries. Nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.routing.models import RoutingRule
from npsloop_alerts.routing.rules import PERSON_PREFIX


class RuleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, rule_id: str, *, for_update: bool = False) -> RoutingRule | None:
        return await self.session.get(RoutingRule, rule_id, with_for_update=for_update)

    async def page(self, *, limit: int, offset: int) -> Sequence[RoutingRule]:
        query = (
            select(RoutingRule)
            .order_by(RoutingRule.priority, RoutingRule.id)
            .limit(limit)
            .offset(offset)
        )
        return (await self.session.scalars(query)).all()

    async def count(self) -> int:
        return await self.session.scalar(select(func.count()).select_from(RoutingRule)) or 0

    async def enabled(self) -> Sequence[RoutingRule]:
        query = (
            select(RoutingRule)
            .where(RoutingRule.enabled.is_(True))
            .order_by(RoutingRule.priority, RoutingRule.id)
        )
        return (await self.session.scalars(query)).all()

    async def ids_referencing_person(self, person_id: str) -> list[str]:
        # JSONB containment: some action's recipients array holds "person:<id>".
        pattern = [{"recipients": [f"{PERSON_PREFIX}{person_id}"]}]
        query = (
            select(RoutingRule.id)
            .where(RoutingRule.actions.contains(pattern))
            .order_by(RoutingRule.id)
        )
        return list(await self.session.scalars(query))

    def add(self, rule: RoutingRule) -> None:
        self.session.add(rule)

    async def delete(self, rule: RoutingRule) -> None:
        await self.session.delete(rule)
