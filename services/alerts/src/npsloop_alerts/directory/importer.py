"""Bulk CSV import of people and accounts: validate every row, then upsert all in one transaction.

All or nothing: if any row is rejected, nothing is applied (unless `skip_invalid`, which applies
the valid rows and reports the others). Each row is validated by the same schema as the admin
API, so a row the import accepts is one `PUT` would accept. Importing the same file twice changes
nothing the second time (and publishes nothing).

Columns (header row required; empty cell = not set):
* people: person_id, name, email, slack_webhook_url, slack_channel, telegram_chat_id,
  webhook_url, locale, timezone, quiet_hours_start, quiet_hours_end, active
* accounts: account_id, name, segment, tier, locale, timezone, owner_id, backup_owner_id,
  manager_id, and `attr.<key>` columns for attributes
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from tqdm import tqdm

from npsloop_alerts.directory.repository import PersonRepository
from npsloop_alerts.directory.schemas import AccountIn, PersonIn, valid_resource_id
from npsloop_alerts.directory.service import DirectoryService

ATTRIBUTE_PREFIX: Final = "attr."
PEOPLE_COLUMNS: Final = (
    "person_id",
    "name",
    "email",
    "slack_webhook_url",
    "slack_channel",
    "telegram_chat_id",
    "webhook_url",
    "locale",
    "timezone",
    "quiet_hours_start",
    "quiet_hours_end",
    "active",
)
ACCOUNT_COLUMNS: Final = (
    "account_id",
    "name",
    "segment",
    "tier",
    "locale",
    "timezone",
    "owner_id",
    "backup_owner_id",
    "manager_id",
)
_BOOLEANS: Final = {
    "true": True,
    "1": True,
    "yes": True,
    "y": True,
    "false": False,
    "0": False,
    "no": False,
    "n": False,
}

_M = TypeVar("_M", bound=BaseModel)


class ImportKind(StrEnum):
    PEOPLE = "people"
    ACCOUNTS = "accounts"

    @property
    def id_column(self) -> str:
        return "person_id" if self is ImportKind.PEOPLE else "account_id"


class CsvFileError(Exception):
    """The file as a whole cannot be imported (missing, unreadable, wrong header)."""


@dataclass(frozen=True, slots=True)
class RejectedRow:
    line: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ParsedRow(Generic[_M]):
    line: int
    resource_id: str
    data: _M


@dataclass(slots=True)
class ImportReport:
    kind: ImportKind
    rows: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    applied: bool = False

    @property
    def accepted(self) -> int:
        return self.rows - len(self.rejected)


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int
    cells: dict[str, str]
    surplus_cells: bool = False


def read_csv(path: Path, kind: ImportKind) -> list[CsvRow]:
    """Rows with the line number each starts on (quoted cells may span lines)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            _check_header(reader.fieldnames, kind)
            rows = []
            line = reader.line_num + 1
            for cells in reader:
                # DictReader puts cells beyond the header under the key None.
                surplus = cells.pop(None, None) is not None
                rows.append(CsvRow(line, _cells(cells), surplus))
                line = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CsvFileError(f"cannot read {path}: {exc}") from exc
    return rows


def _cells(raw: dict[str, str | None]) -> dict[str, str]:
    # Missing trailing cells come back as None: the same as empty.
    return {key.strip(): (value or "").strip() for key, value in raw.items()}


def _check_header(fieldnames: Iterable[str] | None, kind: ImportKind) -> None:
    if not fieldnames:
        raise CsvFileError("the file is empty; the first line must name the columns")
    names = [name.strip() for name in fieldnames]
    allowed = set(PEOPLE_COLUMNS if kind is ImportKind.PEOPLE else ACCOUNT_COLUMNS)
    unknown = [
        name
        for name in names
        if name not in allowed
        and not (kind is ImportKind.ACCOUNTS and name.startswith(ATTRIBUTE_PREFIX))
    ]
    missing = [name for name in (kind.id_column, "name") if name not in names]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    if duplicated:
        problems.append(f"repeated column(s): {', '.join(duplicated)}")
    if problems:
        raise CsvFileError("; ".join(problems))


def validate_rows(
    rows: Iterable[CsvRow], kind: ImportKind
) -> tuple[list[ParsedRow[Any]], list[RejectedRow]]:
    """Every row through the API schema; duplicates of an id are rejected after the first."""
    valid: list[ParsedRow[Any]] = []
    rejected: list[RejectedRow] = []
    first_line: dict[str, int] = {}
    for row in rows:
        parsed = _parse_row(row, kind)
        if isinstance(parsed, RejectedRow):
            rejected.append(parsed)
        elif parsed.resource_id in first_line:
            reason = (
                f"{kind.id_column}: {parsed.resource_id!r} repeats line "
                f"{first_line[parsed.resource_id]}"
            )
            rejected.append(RejectedRow(row.line, (reason,)))
        else:
            first_line[parsed.resource_id] = row.line
            valid.append(parsed)
    return valid, rejected


def _parse_row(row: CsvRow, kind: ImportKind) -> ParsedRow[Any] | RejectedRow:
    if row.surplus_cells:
        return RejectedRow(row.line, ("more cells than the header has columns",))
    reasons = []
    resource_id = row.cells.get(kind.id_column, "")
    try:
        valid_resource_id(resource_id)
    except ValueError as exc:
        reasons.append(f"{kind.id_column}: {exc}")
    try:
        data = _model_from_cells(row.cells, kind)
    except ValidationError as exc:
        reasons.extend(_reasons(exc))
    except ValueError as exc:
        reasons.append(str(exc))
    if reasons:
        return RejectedRow(row.line, tuple(reasons))
    return ParsedRow(row.line, resource_id, data)


def _model_from_cells(cells: dict[str, str], kind: ImportKind) -> BaseModel:
    values: dict[str, Any] = {
        name: value for name, value in cells.items() if value != "" and name != kind.id_column
    }
    if kind is ImportKind.PEOPLE:
        if "active" in values:
            values["active"] = _boolean(values["active"])
        return PersonIn.model_validate(values)
    attributes = {
        name.removeprefix(ATTRIBUTE_PREFIX): values.pop(name)
        for name in list(values)
        if name.startswith(ATTRIBUTE_PREFIX)
    }
    return AccountIn.model_validate({**values, "attributes": attributes})


def _boolean(value: str) -> bool:
    try:
        return _BOOLEANS[value.casefold()]
    except KeyError:
        raise ValueError(f"active: {value!r} is not true/false") from None


def _reasons(exc: ValidationError) -> Iterator[str]:
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"])
        yield f"{location}: {error['msg']}" if location else error["msg"]


async def reject_unknown_people(
    session: AsyncSession, parsed: list[ParsedRow[Any]]
) -> tuple[list[ParsedRow[Any]], list[RejectedRow]]:
    """Accounts naming people that do not exist are rejected, with the field that names them."""
    referenced = {
        person_id for row in parsed for person_id in row.data.person_references().values()
    }
    existing = await PersonRepository(session).existing_ids(referenced)
    valid, rejected = [], []
    for row in parsed:
        missing = [
            f"{name}: person {person_id!r} does not exist"
            for name, person_id in row.data.person_references().items()
            if person_id not in existing
        ]
        if missing:
            rejected.append(RejectedRow(row.line, tuple(missing)))
        else:
            valid.append(row)
    return valid, rejected


async def import_csv(
    session: AsyncSession,
    path: Path,
    kind: ImportKind,
    *,
    skip_invalid: bool = False,
    progress: bool = True,
) -> ImportReport:
    """Validate `path`, then upsert into `session` (the caller commits when `report.applied`)."""
    rows = read_csv(path, kind)
    report = ImportReport(kind=kind, rows=len(rows))
    bar = tqdm(rows, desc=f"validating {kind}", unit="row", disable=not progress, leave=False)
    valid, rejected = validate_rows(bar, kind)
    if kind is ImportKind.ACCOUNTS:
        valid, unknown = await reject_unknown_people(session, valid)
        rejected += unknown
    report.rejected = sorted(rejected, key=lambda item: item.line)
    if report.rejected and not skip_invalid:
        return report
    await _apply(session, valid, kind, report, progress=progress)
    report.applied = True
    return report


async def _apply(
    session: AsyncSession,
    rows: list[ParsedRow[Any]],
    kind: ImportKind,
    report: ImportReport,
    *,
    progress: bool,
) -> None:
    directory = DirectoryService(session)
    for row in tqdm(rows, desc=f"importing {kind}", unit="row", disable=not progress):
        if kind is ImportKind.PEOPLE:
            _, outcome = await directory.upsert_person(row.resource_id, row.data)
        else:
            _, outcome = await directory.upsert_account(row.resource_id, row.data)
        if outcome.created:
            report.created += 1
        elif outcome.changed:
            report.updated += 1
        else:
            report.unchanged += 1
