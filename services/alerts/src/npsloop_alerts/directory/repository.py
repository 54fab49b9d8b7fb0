"""Directory queries. Nothing here commits: the caller's unit of work does."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.directory.models import TEAM_ROW_ID, Account, OutboxMessage, Person, Team

# Only one relay publishes at a time, so records of one key leave in the order they were written.
OUTBOX_RELAY_LOCK_KEY = 0x6E70_736C_6F6F_7001  # "npsloop" + 1


class PersonRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, person_id: str) -> Person | None:
        return await self.session.get(Person, person_id)

    async def get_many(self, person_ids: Collection[str]) -> dict[str, Person]:
        if not person_ids:
            return {}
        rows = await self.session.scalars(select(Person).where(Person.id.in_(person_ids)))
        return {person.id: person for person in rows}

    async def existing_ids(self, person_ids: Collection[str]) -> set[str]:
        if not person_ids:
            return set()
        rows = await self.session.scalars(select(Person.id).where(Person.id.in_(person_ids)))
        return set(rows)

    async def page(self, *, limit: int, offset: int) -> Sequence[Person]:
        query = select(Person).order_by(Person.id).limit(limit).offset(offset)
        return (await self.session.scalars(query)).all()

    async def count(self) -> int:
        return await self.session.scalar(select(func.count()).select_from(Person)) or 0

    def add(self, person: Person) -> None:
        self.session.add(person)

    async def delete(self, person: Person) -> None:
        await self.session.delete(person)


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, account_id: str, *, for_update: bool = False) -> Account | None:
        return await self.session.get(Account, account_id, with_for_update=for_update)

    async def page(self, *, limit: int, offset: int) -> Sequence[Account]:
        query = select(Account).order_by(Account.id).limit(limit).offset(offset)
        return (await self.session.scalars(query)).all()

    async def count(self) -> int:
        return await self.session.scalar(select(func.count()).select_from(Account)) or 0

    def add(self, account: Account) -> None:
        self.session.add(account)

    async def delete(self, account: Account) -> None:
        await self.session.delete(account)

    async def referencing_person(self, person_id: str) -> Sequence[Account]:
        """Accounts naming `person_id` as owner, backup owner or manager."""
        query = (
            select(Account)
            .where(
                or_(
                    Account.owner_id == person_id,
                    Account.backup_owner_id == person_id,
                    Account.manager_id == person_id,
                )
            )
            .order_by(Account.id)
        )
        return (await self.session.scalars(query)).all()

    async def bump_versions_of_person(self, person_id: str) -> Sequence[Account]:
        """Mark every account of `person_id` as changed (a contact changed); returns them."""
        query = (
            update(Account)
            .where(
                or_(
                    Account.owner_id == person_id,
                    Account.backup_owner_id == person_id,
                    Account.manager_id == person_id,
                )
            )
            .values(version=Account.version + 1, updated_at=func.now())
            .returning(Account)
            .execution_options(populate_existing=True)
        )
        accounts = (await self.session.scalars(query)).all()
        return sorted(accounts, key=lambda account: account.id)


class TeamRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self) -> Team:
        """The singleton row; the migration creates it, so it always exists."""
        team = await self.session.get(Team, TEAM_ROW_ID)
        if team is None:
            raise LookupError("the team row is missing: run the alerts migrations")
        return team

    async def referencing_person(self, person_id: str) -> list[str]:
        """Names of team fields that point at `person_id`."""
        team = await self.get()
        return [
            name
            for name, value in (
                ("fallback_person_id", team.fallback_person_id),
                ("wins_person_id", team.wins_person_id),
            )
            if value == person_id
        ]


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, message: OutboxMessage) -> None:
        self.session.add(message)
