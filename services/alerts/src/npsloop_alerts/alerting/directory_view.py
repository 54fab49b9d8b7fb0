"""Reads what the routing engine needs from the directory, inside the deciding transaction.

Two round trips: the account, the team and the enabled rules in one statement, then the people
those can name. Parsed rules are memoised by `(id, version)` (a rule's version grows with every
edit), so the hot path does not re-validate unchanged JSON on every message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import String

from npsloop_alerts.routing.engine import (
    AccountRouting,
    ChannelConfig,
    PersonContact,
    RoutingInputs,
    Rule,
    TeamRouting,
)
from npsloop_alerts.routing.rules import RuleDefinition, recipient_person_id

_ACCOUNT_TEAM_RULES = text(
    """
    SELECT
      (SELECT to_jsonb(a) FROM (
          SELECT id, name, segment, owner_id, backup_owner_id, manager_id
          FROM accounts WHERE id = :account_id) AS a) AS account,
      (SELECT to_jsonb(t) FROM (
          SELECT fallback_person_id, wins_person_id FROM team ORDER BY id LIMIT 1) AS t) AS team,
      (SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb) FROM (
          SELECT id, version, name, description, priority, enabled, stop_processing, match,
                 actions
          FROM routing_rules WHERE enabled) AS r) AS rules
    """
).columns(account=JSONB, team=JSONB, rules=JSONB)

_PEOPLE = text(
    """
    SELECT id, name, email, slack_webhook_url, slack_channel, telegram_chat_id, webhook_url,
           locale, timezone, quiet_hours_start, quiet_hours_end, active
    FROM people WHERE id = ANY(:ids)
    """
).bindparams(bindparam("ids", type_=ARRAY(String)))


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """The account as the alert records it (the name is shown in every message)."""

    id: str
    name: str
    segment: str | None


@dataclass(frozen=True, slots=True)
class DirectorySnapshot:
    account: AccountFacts | None
    inputs: RoutingInputs

    def responsible_person_id(self) -> str | None:
        """Who owns the alert: the first active of owner, backup owner, team fallback."""
        account, people = self.inputs.account, self.inputs.people
        candidates = (
            account.owner_id if account else None,
            account.backup_owner_id if account else None,
            self.inputs.team.fallback_person_id,
        )
        for person_id in candidates:
            person = people.get(person_id) if person_id else None
            if person is not None and person.active:
                return person.id
        return None


class DirectoryView:
    def __init__(self, channels: ChannelConfig) -> None:
        self._channels = channels
        self._rules: dict[tuple[str, int], Rule] = {}

    async def snapshot(self, session: AsyncSession, account_id: str) -> DirectorySnapshot:
        row = (await session.execute(_ACCOUNT_TEAM_RULES, {"account_id": account_id})).one()
        account_row: Mapping[str, Any] | None = row.account
        team_row: Mapping[str, Any] = row.team or {}
        rules = [self._rule(rule_row) for rule_row in row.rules]
        account = _account_routing(account_row)
        team = TeamRouting(
            fallback_person_id=team_row.get("fallback_person_id"),
            wins_person_id=team_row.get("wins_person_id"),
        )
        people = await self._people(session, _referenced_people(account, team, rules))
        return DirectorySnapshot(
            account=_account_facts(account_row),
            inputs=RoutingInputs(
                account=account, people=people, rules=rules, team=team, channels=self._channels
            ),
        )

    def _rule(self, row: Mapping[str, Any]) -> Rule:
        key = (str(row["id"]), int(row["version"]))
        cached = self._rules.get(key)
        if cached is None:
            definition = RuleDefinition.model_validate(
                {
                    field: row[field]
                    for field in (
                        "name",
                        "description",
                        "priority",
                        "enabled",
                        "stop_processing",
                        "match",
                        "actions",
                    )
                }
            )
            cached = self._rules[key] = Rule(id=key[0], definition=definition)
        return cached

    async def _people(
        self, session: AsyncSession, person_ids: Iterable[str]
    ) -> dict[str, PersonContact]:
        ids = sorted(set(person_ids))
        if not ids:
            return {}
        rows = (await session.execute(_PEOPLE, {"ids": ids})).mappings()
        return {row["id"]: PersonContact(**row) for row in rows}


def _account_routing(row: Mapping[str, Any] | None) -> AccountRouting | None:
    if row is None:
        return None
    return AccountRouting(
        id=row["id"],
        segment=row["segment"],
        owner_id=row["owner_id"],
        backup_owner_id=row["backup_owner_id"],
        manager_id=row["manager_id"],
    )


def _account_facts(row: Mapping[str, Any] | None) -> AccountFacts | None:
    if row is None:
        return None
    return AccountFacts(id=row["id"], name=row["name"], segment=row["segment"])


def _referenced_people(
    account: AccountRouting | None, team: TeamRouting, rules: Iterable[Rule]
) -> set[str]:
    ids = {team.fallback_person_id, team.wins_person_id}
    if account is not None:
        ids |= {account.owner_id, account.backup_owner_id, account.manager_id}
    for rule in rules:
        for action in rule.definition.actions:
            ids |= {recipient_person_id(recipient) for recipient in action.recipients}
    return {person_id for person_id in ids if person_id}
