"""Reads what the routing engine needs from the directory in one round trip (on asyncpg
directly, like every statement the decide step runs per poll; see `npsloop_shared.driver_db`).

One statement returns the accounts asked for, the team, the enabled rules and every person
those can name (owners, backup owners, managers, team fallback and wins, `person:<id>`
recipients of rules): one account for a single response, all of a consumed batch's at once.
Parsed rules are memoised by `(id, version)` (a rule's version grows with every edit), so the
hot path does not re-validate unchanged JSON on every message.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import time
from typing import Any

from sqlalchemy import text

from npsloop_alerts.routing.engine import (
    AccountRouting,
    ChannelConfig,
    PersonContact,
    RoutingInputs,
    Rule,
    TeamRouting,
)
from npsloop_alerts.routing.rules import PERSON_PREFIX, RuleDefinition
from npsloop_shared.driver_db import DriverSql

# The four columns are jsonb, decoded by the connection's codec (asyncpg's, set by `DriverPool`
# or by SQLAlchemy's dialect: both give Python objects).
_DIRECTORY = DriverSql(
    text(
        f"""
    WITH acc AS (
        SELECT id, name, segment, owner_id, backup_owner_id, manager_id
        FROM accounts WHERE id = ANY(:account_ids)
    ), tm AS (
        SELECT fallback_person_id, wins_person_id FROM team ORDER BY id LIMIT 1
    ), rules AS (
        SELECT id, version, name, description, priority, enabled, stop_processing, match,
               actions
        FROM routing_rules WHERE enabled
    ), wanted AS (
        SELECT unnest(ARRAY[owner_id, backup_owner_id, manager_id]) AS id FROM acc
        UNION SELECT unnest(ARRAY[fallback_person_id, wins_person_id]) FROM tm
        UNION SELECT substr(recipient, {len(PERSON_PREFIX) + 1})
        FROM rules, jsonb_array_elements(rules.actions) AS action,
             jsonb_array_elements_text(action -> 'recipients') AS recipient
        WHERE recipient LIKE '{PERSON_PREFIX}%'
    )
    SELECT
        (SELECT coalesce(jsonb_agg(to_jsonb(acc)), '[]'::jsonb) FROM acc) AS accounts,
        (SELECT to_jsonb(tm) FROM tm) AS team,
        (SELECT coalesce(jsonb_agg(to_jsonb(rules)), '[]'::jsonb) FROM rules) AS rules,
        (SELECT coalesce(jsonb_agg(to_jsonb(p)), '[]'::jsonb) FROM (
            SELECT id, name, email, slack_webhook_url, slack_channel, telegram_chat_id,
                   webhook_url, locale, timezone, quiet_hours_start, quiet_hours_end, active
            FROM people WHERE id = ANY(ARRAY(SELECT id FROM wanted))) AS p) AS people
    """  # noqa: S608 - constants only; every value is a bound parameter
    )
)


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

    async def snapshots(
        self, connection: Any, account_ids: Collection[str]
    ) -> dict[str, DirectorySnapshot]:
        """A snapshot per account id (unknown accounts included), read in one statement on
        `connection` (an asyncpg connection)."""
        (row,) = await _DIRECTORY.fetch(connection, {"account_ids": list(set(account_ids))})
        accounts: dict[str, Mapping[str, Any]] = {acc["id"]: acc for acc in row["accounts"]}
        team_row: Mapping[str, Any] = row["team"] or {}
        people = {person["id"]: _person(person) for person in row["people"]}
        rules = [self._rule(rule_row) for rule_row in row["rules"]]
        team = TeamRouting(
            fallback_person_id=team_row.get("fallback_person_id"),
            wins_person_id=team_row.get("wins_person_id"),
        )
        return {
            account_id: DirectorySnapshot(
                account=_account_facts(accounts.get(account_id)),
                inputs=RoutingInputs(
                    account=_account_routing(accounts.get(account_id)),
                    people=people,
                    rules=rules,
                    team=team,
                    channels=self._channels,
                ),
            )
            for account_id in account_ids
        }

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


def _person(row: Mapping[str, Any]) -> PersonContact:
    """A person from its JSON row (times arrive as `HH:MM:SS` text)."""
    fields = dict(row)
    for name in ("quiet_hours_start", "quiet_hours_end"):
        if fields[name] is not None:
            fields[name] = time.fromisoformat(fields[name])
    return PersonContact(**fields)


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
