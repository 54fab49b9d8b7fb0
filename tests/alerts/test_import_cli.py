"""`npsloop-alerts import …` as an operator runs it: a real process, a real committed database."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from npsloop_alerts.__main__ import main
from npsloop_alerts.directory.importer import ACCOUNT_COLUMNS, PEOPLE_COLUMNS
from npsloop_alerts.directory.models import Account, OutboxMessage, Person
from tests.alerts.conftest import CreateDatabase

GOOD_PEOPLE = "person_id,name,email\ncli-ana,Ana,ana@example.com\ncli-bob,Bob,bob@example.com\n"
BAD_PEOPLE = "person_id,name,email\ncli-eve,Eve,eve@example.com\ncli-bad,Bad,nope\n"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


async def cli(database_url: str, *args: str) -> Run:
    env = {**os.environ, "NPSLOOP_DATABASE_URL": database_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "npsloop_alerts",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


async def rows(database_url: str, model: type[Person] | type[Account] | type[OutboxMessage]) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.scalar(select(func.count()).select_from(model)) or 0
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def cli_database_url(create_migrated_database: CreateDatabase) -> str:
    return await create_migrated_database()


def csv_file(tmp_path: Path, text: str, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def test_import_commits_and_a_second_run_changes_nothing(
    cli_database_url: str, tmp_path: Path
) -> None:
    path = csv_file(tmp_path, GOOD_PEOPLE)
    before = await rows(cli_database_url, Person)

    first = await cli(cli_database_url, "import", "people", str(path))
    second = await cli(cli_database_url, "import", "people", str(path), "--no-progress")

    assert first.code == 0, first.stderr
    assert "2 people row(s): 2 created, 0 updated, 0 unchanged" in first.stdout
    assert "importing people" in first.stderr  # the progress bar
    assert second.code == 0
    assert "0 created, 0 updated, 2 unchanged" in second.stdout
    assert second.stderr == ""
    assert await rows(cli_database_url, Person) == before + 2


async def test_rejected_rows_are_listed_and_nothing_is_applied(
    cli_database_url: str, tmp_path: Path
) -> None:
    path = csv_file(tmp_path, BAD_PEOPLE)
    before = await rows(cli_database_url, Person)

    run = await cli(cli_database_url, "import", "people", str(path), "--no-progress")

    assert run.code == 1
    assert "1 rejected; nothing was applied" in run.stdout
    assert "  line 3: email: value is not a valid email address" in run.stdout
    assert await rows(cli_database_url, Person) == before


async def test_skip_invalid_applies_the_rest_and_says_so_in_the_exit_code(
    cli_database_url: str, tmp_path: Path
) -> None:
    path = csv_file(tmp_path, BAD_PEOPLE.replace("cli-", "skip-"))
    before = await rows(cli_database_url, Person)

    run = await cli(
        cli_database_url, "import", "people", str(path), "--skip-invalid", "--no-progress"
    )

    assert run.code == 3
    assert "1 created, 0 updated, 0 unchanged, 1 rejected and skipped" in run.stdout
    assert await rows(cli_database_url, Person) == before + 1


async def test_account_import_writes_the_publication_outbox(
    cli_database_url: str, tmp_path: Path
) -> None:
    await cli(cli_database_url, "import", "people", str(csv_file(tmp_path, GOOD_PEOPLE)))
    accounts = csv_file(
        tmp_path,
        "account_id,name,owner_id\ncli-acc-1,One,cli-ana\ncli-acc-2,Two,cli-bob\n",
        "accounts.csv",
    )
    before = await rows(cli_database_url, OutboxMessage)

    run = await cli(cli_database_url, "import", "accounts", str(accounts), "--no-progress")

    assert run.code == 0, run.stdout + run.stderr
    assert await rows(cli_database_url, OutboxMessage) == before + 2


async def test_file_problems_exit_2(cli_database_url: str, tmp_path: Path) -> None:
    missing = await cli(cli_database_url, "import", "people", str(tmp_path / "absent.csv"))
    header = await cli(
        cli_database_url, "import", "accounts", str(csv_file(tmp_path, "id,title\n"))
    )
    usage = await cli(cli_database_url, "import", "planets", "x.csv")

    assert missing.code == header.code == usage.code == 2
    assert "cannot read" in missing.stderr
    assert "missing column(s): account_id, name" in header.stderr
    assert "invalid choice: 'planets'" in usage.stderr


async def test_an_unreachable_database_exits_4(tmp_path: Path) -> None:
    run = await cli(
        "postgresql+asyncpg://postgres@127.0.0.1:9/npsloop",
        "import",
        "people",
        str(csv_file(tmp_path, GOOD_PEOPLE)),
        "--no-progress",
    )

    assert run.code == 4
    assert "database error, nothing applied" in run.stderr


def _help(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """`npsloop-alerts COMMAND --help` as one line (argparse wraps it), after a clean exit."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_import_help_names_every_column_the_importer_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = _help(capsys, "import")

    for column in (*PEOPLE_COLUMNS, *ACCOUNT_COLUMNS, "attr.<key>"):
        assert f" {column}," in shown or f" {column} " in shown, column
    assert "exit codes: 0 all applied; 1 rows rejected, nothing applied" in shown


def test_redrive_help_says_what_a_redrive_does_and_how_to_find_dead_deliveries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = _help(capsys, "redrive")

    assert "attempts are reset" in shown
    assert "GET /v1/deliveries?status=dead" in shown
    assert "--all-dead --channel telegram" in shown
