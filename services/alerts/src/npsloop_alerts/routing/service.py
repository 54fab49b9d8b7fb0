"""Rule management (validated on write) and routing decisions loaded from the database.

Nothing here commits; the caller's unit of work does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.directory.models import Account, Person, Team
from npsloop_alerts.directory.repository import AccountRepository, PersonRepository, TeamRepository
from npsloop_alerts.routing.engine import (
    AccountRouting,
    ChannelConfig,
    PersonContact,
    ResponseFacts,
    RoutingDecision,
    RoutingInputs,
    Rule,
    TeamRouting,
    route,
)
from npsloop_alerts.routing.models import RoutingRule
from npsloop_alerts.routing.repository import RuleRepository
from npsloop_alerts.routing.rules import RuleDefinition
from npsloop_alerts.routing.schemas import RuleCreate, RuleOut
from npsloop_shared.errors import Conflict, NotFound, ValidationFailed


class RuleService:
    def __init__(self, session: AsyncSession) -> None:
        self.rules = RuleRepository(session)
        self.people = PersonRepository(session)
        self._session = session

    async def get(self, rule_id: str) -> RoutingRule:
        rule = await self.rules.get(rule_id)
        if rule is None:
            raise NotFound(f"routing rule {rule_id!r} does not exist")
        return rule

    async def list(self, *, limit: int, offset: int) -> tuple[Sequence[RoutingRule], int]:
        return await self.rules.page(limit=limit, offset=offset), await self.rules.count()

    async def create(self, data: RuleCreate) -> RoutingRule:
        rule_id = data.id or f"rule-{uuid.uuid4().hex[:12]}"
        if await self.rules.get(rule_id) is not None:
            raise Conflict(f"routing rule {rule_id!r} already exists; PUT it to replace it")
        definition = RuleDefinition.model_validate(data.model_dump(exclude={"id"}))
        await self._require_people(definition)
        rule = RoutingRule(id=rule_id, **_columns(definition))
        self.rules.add(rule)
        await self._flush()
        return rule

    async def put(self, rule_id: str, definition: RuleDefinition) -> tuple[RoutingRule, bool]:
        """Create or replace; returns the rule and whether it was created."""
        await self._require_people(definition)
        rule = await self.rules.get(rule_id, for_update=True)
        if rule is None:
            rule = RoutingRule(id=rule_id, **_columns(definition))
            self.rules.add(rule)
            await self._flush()
            return rule, True
        columns = _columns(definition)
        if any(getattr(rule, name) != value for name, value in columns.items()):
            for name, value in columns.items():
                setattr(rule, name, value)
            rule.version += 1
            await self._flush()
        return rule, False

    async def delete(self, rule_id: str) -> None:
        await self.rules.delete(await self.get(rule_id))
        await self._flush()

    async def _require_people(self, definition: RuleDefinition) -> None:
        references = definition.person_references()
        existing = await self.people.existing_ids({person_id for *_, person_id in references})
        errors = [
            {
                "pointer": f"/actions/{action}/recipients/{recipient}",
                "detail": f"person {person_id!r} does not exist",
                "type": "unknown_person",
            }
            for action, recipient, person_id in references
            if person_id not in existing
        ]
        if errors:
            raise ValidationFailed("The rule sends to people who do not exist.", errors=errors)

    async def _flush(self) -> None:
        try:
            await self._session.flush()
        except IntegrityError as exc:
            raise Conflict("The rule changed concurrently with this request; retry it.") from exc


def rule_out(rule: RoutingRule) -> RuleOut:
    return RuleOut.model_validate(
        {
            "id": rule.id,
            "name": rule.name,
            "description": rule.description,
            "priority": rule.priority,
            "enabled": rule.enabled,
            "stop_processing": rule.stop_processing,
            "match": rule.match,
            "actions": rule.actions,
            "version": rule.version,
            "created_at": rule.created_at,
            "updated_at": rule.updated_at,
        }
    )


def _columns(definition: RuleDefinition) -> dict[str, object]:
    dumped = definition.model_dump(mode="json")
    return {
        "name": dumped["name"],
        "description": dumped["description"],
        "priority": dumped["priority"],
        "enabled": dumped["enabled"],
        "stop_processing": dumped["stop_processing"],
        "match": dumped["match"],
        "actions": dumped["actions"],
    }


class RoutingService:
    """Loads what the engine needs for one response, then asks the pure engine."""

    def __init__(self, session: AsyncSession, channels: ChannelConfig) -> None:
        self.accounts = AccountRepository(session)
        self.people = PersonRepository(session)
        self.team = TeamRepository(session)
        self.rules = RuleRepository(session)
        self.channels = channels

    async def decide(self, facts: ResponseFacts, *, now: datetime) -> RoutingDecision:
        """Who gets this response, where and when. Reads only; records nothing."""
        return route(facts, await self.inputs_for(facts.account_id), now=now)

    async def inputs_for(self, account_id: str) -> RoutingInputs:
        account = await self.accounts.get(account_id)
        team = await self.team.get()
        rules = [_engine_rule(row) for row in await self.rules.enabled()]
        wanted = _people_needed(account, team, rules)
        people = await self.people.get_many(wanted)
        return RoutingInputs(
            account=_account_routing(account) if account else None,
            people={person_id: person_contact(person) for person_id, person in people.items()},
            rules=rules,
            team=TeamRouting(
                fallback_person_id=team.fallback_person_id, wins_person_id=team.wins_person_id
            ),
            channels=self.channels,
        )


def _engine_rule(row: RoutingRule) -> Rule:
    definition = RuleDefinition.model_validate(
        {
            "name": row.name,
            "description": row.description,
            "priority": row.priority,
            "enabled": row.enabled,
            "stop_processing": row.stop_processing,
            "match": row.match,
            "actions": row.actions,
        }
    )
    return Rule(id=row.id, definition=definition)


def _people_needed(account: Account | None, team: Team, rules: Iterable[Rule]) -> set[str]:
    candidates = [team.fallback_person_id, team.wins_person_id]
    if account is not None:
        candidates += [account.owner_id, account.backup_owner_id, account.manager_id]
    wanted = {person_id for person_id in candidates if person_id}
    for rule in rules:
        wanted.update(person_id for *_, person_id in rule.definition.person_references())
    return wanted


def _account_routing(account: Account) -> AccountRouting:
    return AccountRouting(
        id=account.id,
        segment=account.segment,
        owner_id=account.owner_id,
        backup_owner_id=account.backup_owner_id,
        manager_id=account.manager_id,
    )


def person_contact(person: Person) -> PersonContact:
    return PersonContact(
        id=person.id,
        name=person.name,
        email=person.email,
        slack_webhook_url=person.slack_webhook_url,
        slack_channel=person.slack_channel,
        telegram_chat_id=person.telegram_chat_id,
        webhook_url=person.webhook_url,
        locale=person.locale,
        timezone=person.timezone,
        quiet_hours_start=person.quiet_hours_start,
        quiet_hours_end=person.quiet_hours_end,
        active=person.active,
    )
