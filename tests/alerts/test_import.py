"""CSV import into real PostgreSQL (inside the test transaction): validate all, then apply all."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from npsloop_alerts.directory.importer import CsvFileError, ImportKind, import_csv
from npsloop_alerts.directory.models import Account, OutboxMessage, Person

PEOPLE_CSV = """\
person_id,name,email,slack_webhook_url,telegram_chat_id,locale,timezone,quiet_hours_start,quiet_hours_end,active
imp-ana,Ana Souza,ana@example.com,https://hooks.slack.example/ana,1001,pt-BR,America/Sao_Paulo,22:00,07:00,yes
imp-li,"Li, Wei",li@example.com,,,zh-CN,Asia/Shanghai,,,
imp-bob,Bob,bob@example.com,,,en,UTC,,,false
"""

ACCOUNTS_CSV = """\
account_id,name,segment,tier,owner_id,backup_owner_id,manager_id,attr.region
imp-acme,Acme,wholesale,gold,imp-ana,imp-bob,imp-li,south
imp-umbrella,Umbrella,retail,,imp-li,,,
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def count(session: AsyncSession, model: type[Person] | type[Account]) -> int:
    return await session.scalar(select(func.count()).select_from(model)) or 0


async def outbox_size(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(OutboxMessage)) or 0


async def test_people_and_accounts_are_imported_with_every_field(
    session: AsyncSession, tmp_path: Path
) -> None:
    people = await import_csv(
        session, write(tmp_path, "people.csv", PEOPLE_CSV), ImportKind.PEOPLE, progress=False
    )
    accounts = await import_csv(
        session, write(tmp_path, "accounts.csv", ACCOUNTS_CSV), ImportKind.ACCOUNTS, progress=False
    )

    assert (people.applied, people.created, people.rejected) == (True, 3, [])
    assert (accounts.applied, accounts.created) == (True, 2)
    ana = await session.get(Person, "imp-ana")
    assert ana is not None
    assert (ana.locale, ana.timezone, str(ana.quiet_hours_start)) == (
        "pt-BR",
        "America/Sao_Paulo",
        "22:00:00",
    )
    li = await session.get(Person, "imp-li")
    assert li is not None
    assert (li.name, li.slack_webhook_url, li.active) == ("Li, Wei", None, True)
    bob = await session.get(Person, "imp-bob")
    assert bob is not None
    assert bob.active is False
    acme = await session.get(Account, "imp-acme")
    assert acme is not None
    assert (acme.owner_id, acme.backup_owner_id, acme.manager_id) == (
        "imp-ana",
        "imp-bob",
        "imp-li",
    )
    assert acme.attributes == {"region": "south"}


async def test_importing_the_same_file_again_changes_and_publishes_nothing(
    session: AsyncSession, tmp_path: Path
) -> None:
    people_file = write(tmp_path, "people.csv", PEOPLE_CSV)
    accounts_file = write(tmp_path, "accounts.csv", ACCOUNTS_CSV)
    await import_csv(session, people_file, ImportKind.PEOPLE, progress=False)
    await import_csv(session, accounts_file, ImportKind.ACCOUNTS, progress=False)
    published = await outbox_size(session)

    people = await import_csv(session, people_file, ImportKind.PEOPLE, progress=False)
    accounts = await import_csv(session, accounts_file, ImportKind.ACCOUNTS, progress=False)

    assert (people.unchanged, people.created, people.updated) == (3, 0, 0)
    assert (accounts.unchanged, accounts.created, accounts.updated) == (2, 0, 0)
    assert await outbox_size(session) == published


async def test_one_bad_row_rejects_the_file_and_applies_nothing(
    session: AsyncSession, tmp_path: Path
) -> None:
    text = (
        "person_id,name,email,locale,timezone\n"
        "ok-1,Good,good@example.com,en,UTC\n"
        "ok-2,Bad email,not-an-email,en,UTC\n"
        "ok-3,Bad zone,z@example.com,en,Moon/Base\n"
        ",No id,,en,UTC\n"
        "ok-1,Duplicate,,en,UTC\n"
    )
    before = await count(session, Person)

    report = await import_csv(
        session, write(tmp_path, "people.csv", text), ImportKind.PEOPLE, progress=False
    )

    assert not report.applied
    assert report.rows == 5
    assert [row.line for row in report.rejected] == [3, 4, 5, 6]
    reasons = {row.line: " ".join(row.reasons) for row in report.rejected}
    assert reasons[3].startswith("email:")
    assert "Moon/Base" in reasons[4]
    assert reasons[5].startswith("person_id:")
    assert "repeats line 2" in reasons[6]
    assert await count(session, Person) == before
    assert await session.get(Person, "ok-1") is None


async def test_skip_invalid_applies_the_valid_rows_only(
    session: AsyncSession, tmp_path: Path
) -> None:
    text = "person_id,name,locale\nskip-1,Good,en\nskip-2,Bad,klingon\n"

    report = await import_csv(
        session,
        write(tmp_path, "people.csv", text),
        ImportKind.PEOPLE,
        skip_invalid=True,
        progress=False,
    )

    assert report.applied
    assert (report.created, [row.line for row in report.rejected]) == (1, [3])
    assert await session.get(Person, "skip-1") is not None
    assert await session.get(Person, "skip-2") is None


async def test_accounts_naming_unknown_people_are_rejected_with_the_field(
    session: AsyncSession, tmp_path: Path
) -> None:
    text = "account_id,name,owner_id,manager_id\nacc-1,One,nobody,nobody-else\n"

    report = await import_csv(
        session, write(tmp_path, "accounts.csv", text), ImportKind.ACCOUNTS, progress=False
    )

    assert not report.applied
    assert report.rejected[0].line == 2
    assert report.rejected[0].reasons == (
        "owner_id: person 'nobody' does not exist",
        "manager_id: person 'nobody-else' does not exist",
    )


async def test_line_numbers_count_quoted_newlines(session: AsyncSession, tmp_path: Path) -> None:
    text = 'person_id,name,locale\nml-1,"Two\nlines",en\nml-2,Bad,xx\n'

    report = await import_csv(
        session, write(tmp_path, "people.csv", text), ImportKind.PEOPLE, progress=False
    )

    assert [row.line for row in report.rejected] == [4]


async def test_rows_with_surplus_cells_are_rejected(session: AsyncSession, tmp_path: Path) -> None:
    text = "person_id,name\nsc-1,One,extra\n"

    report = await import_csv(
        session, write(tmp_path, "people.csv", text), ImportKind.PEOPLE, progress=False
    )

    assert report.rejected[0].reasons == ("more cells than the header has columns",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("name,email\nAna,a@example.com\n", "missing column(s): person_id"),
        ("person_id,name,shoe_size\n", "unknown column(s): shoe_size"),
        ("person_id,name,name\n", "repeated column(s): name"),
    ],
)
async def test_a_file_with_a_wrong_header_is_refused_as_a_whole(
    session: AsyncSession, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(CsvFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await import_csv(
            session, write(tmp_path, "people.csv", text), ImportKind.PEOPLE, progress=False
        )


async def test_a_missing_file_is_refused(session: AsyncSession, tmp_path: Path) -> None:
    with pytest.raises(CsvFileError, match="cannot read"):
        await import_csv(session, tmp_path / "absent.csv", ImportKind.PEOPLE, progress=False)


async def test_a_utf8_bom_from_spreadsheets_is_accepted(
    session: AsyncSession, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes("\ufeffperson_id,name\nbom-1,Zoë\n".encode())

    report = await import_csv(session, path, ImportKind.PEOPLE, progress=False)

    assert report.created == 1
    person = await session.get(Person, "bom-1")
    assert person is not None
    assert person.name == "Zoë"
