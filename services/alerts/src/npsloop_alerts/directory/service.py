"""Directory rules: upserts, reference checks, and publishing every effective account change.

Nothing here commits; the request (or the CSV import) owns the transaction, so the change and its
outbox record commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.directory.models import Account, Person, Team
from npsloop_alerts.directory.publisher import AccountPublisher
from npsloop_alerts.directory.repository import (
    AccountRepository,
    OutboxRepository,
    PersonRepository,
    TeamRepository,
)
from npsloop_alerts.directory.schemas import AccountIn, PersonIn, TeamIn
from npsloop_alerts.routing.repository import RuleRepository
from npsloop_shared.errors import Conflict, NotFound, ValidationFailed

# Person fields that appear in `AccountUpserted`; changing one republishes the person's accounts.
PUBLISHED_PERSON_FIELDS = ("name", "email", "locale", "timezone", "active")
MAX_LISTED_REFERENCES = 10


@dataclass(frozen=True, slots=True)
class Upserted:
    """What a PUT did: `created` (201) or not (200); `changed` is False for a no-op."""

    created: bool
    changed: bool


class DirectoryService:
    def __init__(self, session: AsyncSession) -> None:
        self.people = PersonRepository(session)
        self.accounts = AccountRepository(session)
        self.team = TeamRepository(session)
        self.rules = RuleRepository(session)
        self.publisher = AccountPublisher(OutboxRepository(session))
        self._session = session

    async def _flush(self) -> None:
        await _flush_or_conflict(self._session)

    # --- people -------------------------------------------------------------------------------

    async def get_person(self, person_id: str) -> Person:
        person = await self.people.get(person_id)
        if person is None:
            raise NotFound(f"person {person_id!r} does not exist")
        return person

    async def list_people(self, *, limit: int, offset: int) -> tuple[Sequence[Person], int]:
        return await self.people.page(limit=limit, offset=offset), await self.people.count()

    async def upsert_person(self, person_id: str, data: PersonIn) -> tuple[Person, Upserted]:
        values = data.model_dump()
        person = await self.people.get(person_id)
        if person is None:
            person = Person(id=person_id, **values)
            self.people.add(person)
            await self._flush()
            return person, Upserted(created=True, changed=True)
        changed = _apply(person, values)
        if not changed:
            return person, Upserted(created=False, changed=False)
        await self._flush()
        if changed & set(PUBLISHED_PERSON_FIELDS):
            await self._republish_accounts_of(person.id)
        return person, Upserted(created=False, changed=True)

    async def delete_person(self, person_id: str) -> None:
        person = await self.get_person(person_id)
        await self._refuse_if_referenced(person_id)
        await self.people.delete(person)
        await self._flush()

    async def _refuse_if_referenced(self, person_id: str) -> None:
        accounts = await self.accounts.referencing_person(person_id)
        team_fields = await self.team.referencing_person(person_id)
        rule_ids = await self.rules.ids_referencing_person(person_id)
        reasons = []
        if accounts:
            shown = ", ".join(account.id for account in accounts[:MAX_LISTED_REFERENCES])
            more = len(accounts) - MAX_LISTED_REFERENCES
            reasons.append(
                f"{len(accounts)} account(s) name them as owner, backup owner or manager "
                f"({shown}{f' and {more} more' if more > 0 else ''})"
            )
        if team_fields:
            reasons.append(f"the team configuration uses them as {', '.join(team_fields)}")
        if rule_ids:
            reasons.append(f"routing rule(s) {', '.join(rule_ids)} send to them")
        if reasons:
            raise Conflict(
                f"person {person_id!r} is still referenced: {'; '.join(reasons)}. "
                "Reassign those first, or set the person inactive (active=false) instead."
            )

    async def _republish_accounts_of(self, person_id: str) -> None:
        accounts = await self.accounts.bump_versions_of_person(person_id)
        if not accounts:
            return
        contacts = await self.people.get_many(_contact_ids(accounts))
        for account in accounts:
            self.publisher.upserted(account, contacts)

    # --- accounts -----------------------------------------------------------------------------

    async def get_account(self, account_id: str) -> Account:
        account = await self.accounts.get(account_id)
        if account is None:
            raise NotFound(f"account {account_id!r} does not exist")
        return account

    async def list_accounts(self, *, limit: int, offset: int) -> tuple[Sequence[Account], int]:
        return await self.accounts.page(limit=limit, offset=offset), await self.accounts.count()

    async def upsert_account(self, account_id: str, data: AccountIn) -> tuple[Account, Upserted]:
        await self.require_people(data.person_references())
        values = data.model_dump()
        account = await self.accounts.get(account_id, for_update=True)
        if account is None:
            account = Account(id=account_id, **values)
            self.accounts.add(account)
            outcome = Upserted(created=True, changed=True)
        elif _apply(account, values):
            account.version += 1
            outcome = Upserted(created=False, changed=True)
        else:
            return account, Upserted(created=False, changed=False)
        await self._flush()
        contacts = await self.people.get_many(_contact_ids([account]))
        self.publisher.upserted(account, contacts)
        return account, outcome

    async def delete_account(self, account_id: str) -> None:
        account = await self.get_account(account_id)
        await self.accounts.delete(account)
        await self._flush()
        self.publisher.deleted(account_id)

    async def require_people(self, references: Mapping[str, str]) -> None:
        """422 naming each field whose person does not exist."""
        existing = await self.people.existing_ids(set(references.values()))
        errors = [
            {
                "pointer": f"/{field}",
                "detail": f"person {person_id!r} does not exist",
                "type": "unknown_person",
            }
            for field, person_id in references.items()
            if person_id not in existing
        ]
        if errors:
            raise ValidationFailed("The request names people who do not exist.", errors=errors)

    # --- team ---------------------------------------------------------------------------------

    async def get_team(self) -> Team:
        return await self.team.get()

    async def update_team(self, data: TeamIn) -> Team:
        references = {name: value for name, value in data.model_dump().items() if value is not None}
        await self.require_people(references)
        team = await self.team.get()
        if _apply(team, data.model_dump()):
            await self._flush()
        return team


async def _flush_or_conflict(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        # A concurrent request created the same id or removed a referenced person meanwhile.
        raise Conflict(
            "The directory changed concurrently with this request; retry it.",
        ) from exc


def _apply(row: Any, values: Mapping[str, Any]) -> set[str]:
    """Set every differing attribute; returns the names of those that changed."""
    changed = set()
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed.add(name)
    return changed


def _contact_ids(accounts: Collection[Account]) -> set[str]:
    ids: set[str] = set()
    for account in accounts:
        ids.update(
            person_id
            for person_id in (account.owner_id, account.backup_owner_id, account.manager_id)
            if person_id is not None
        )
    return ids
