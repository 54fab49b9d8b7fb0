"""`npsloop-alerts`: the alerts process and its admin commands.

    npsloop-alerts [serve] [--host H] [--port P]     the API, consumer and delivery loops
    npsloop-alerts migrate                           apply database migrations (Alembic)
    npsloop-alerts import accounts|people FILE.csv   bulk upsert, all or nothing
    npsloop-alerts redrive ID…|--all-dead            re-drive dead deliveries

Exit codes: 0 success; 1 rows rejected, nothing applied; 2 usage or file error; 3 applied, but
rows were skipped (`--skip-invalid`); 4 database unavailable or failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TextIO

from sqlalchemy.exc import SQLAlchemyError

from npsloop_alerts.delivery.cli import add_redrive_command
from npsloop_alerts.directory.importer import (
    ACCOUNT_COLUMNS,
    PEOPLE_COLUMNS,
    CsvFileError,
    ImportKind,
    ImportReport,
    import_csv,
)
from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.db import create_engine, create_sessionmaker, session_scope
from npsloop_shared.logging import configure_logging

EXIT_OK: Final = 0
EXIT_REJECTED: Final = 1
EXIT_USAGE: Final = 2
EXIT_PARTIAL: Final = 3
EXIT_DATABASE: Final = 4
MAX_LISTED_REJECTIONS: Final = 200

Command = Callable[[argparse.Namespace, AlertsSettings], int]


def _wrapped(columns: Sequence[str]) -> str:
    return "\n             ".join(textwrap.wrap(", ".join(columns), width=80))


IMPORT_DESCRIPTION: Final = f"""\
Upsert every row of a CSV file into the directory, in one transaction: a row the import
accepts is one `PUT /v1/people/{{id}}` or `/v1/accounts/{{id}}` would accept, importing the
same file again changes nothing, and every account change is published on npsloop.accounts.v1.
If any row is invalid, nothing is applied and each rejected row is listed with its line number
and reasons (or, with --skip-invalid, the valid rows are applied and the others listed).

columns (the header row names them, in any order; an empty cell means "not set"):
  people:    {_wrapped(PEOPLE_COLUMNS)}
  accounts:  {_wrapped((*ACCOUNT_COLUMNS, "attr.<key> (free-form attributes)"))}

example:
  npsloop-alerts import people people.csv
  npsloop-alerts import accounts accounts.csv --skip-invalid

exit codes: 0 all applied; 1 rows rejected, nothing applied; 2 usage or unreadable file;
3 applied, but rows were skipped (--skip-invalid); 4 database unavailable or failed
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npsloop-alerts",
        description="npsloop alerts: routes NPS responses to account owners.",
        epilog=(
            "Without a command, `serve` runs. Every command reads its configuration from "
            "NPSLOOP_* environment variables (NPSLOOP_DATABASE_URL, "
            "NPSLOOP_KAFKA_BOOTSTRAP_SERVERS, ...; see the README). "
            "`npsloop-alerts COMMAND --help` describes each command."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API and background loops (default)")
    serve.add_argument("--host", help="bind address (default NPSLOOP_HTTP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default NPSLOOP_HTTP_PORT or 8001)")
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.set_defaults(handler=_migrate)

    importer = commands.add_parser(
        "import",
        help="bulk upsert people or accounts from CSV (all or nothing)",
        description=IMPORT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    importer.add_argument(
        "kind", choices=[kind.value for kind in ImportKind], help="what the file lists"
    )
    importer.add_argument(
        "file", type=Path, help="CSV file (UTF-8, a header row naming the columns)"
    )
    importer.add_argument(
        "--skip-invalid",
        action="store_true",
        help="apply the valid rows even if some are rejected (exit code 3)",
    )
    importer.add_argument("--no-progress", action="store_true", help="no progress bar")
    importer.set_defaults(handler=_import)

    add_redrive_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in {"-h", "--help"}):
        arguments.insert(0, "serve")
    args = build_parser().parse_args(arguments)
    settings = AlertsSettings()
    handler: Command = args.handler
    return handler(args, settings)


def _serve(args: argparse.Namespace, settings: AlertsSettings) -> int:
    import uvicorn

    from npsloop_alerts.app import create_app

    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings, settle_gc_after_start=True),
        host=args.host or settings.http_host,
        port=args.port or settings.http_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
    )
    return EXIT_OK


def alembic_ini_path() -> Path:
    """`services/alerts/alembic.ini`: beside the source tree (editable install or a checkout)."""
    candidates = (
        Path(__file__).resolve().parents[2] / "alembic.ini",
        Path.cwd() / "services" / "alerts" / "alembic.ini",
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("services/alerts/alembic.ini not found; run from the repository root")


def _migrate(args: argparse.Namespace, settings: AlertsSettings) -> int:
    from alembic import command
    from alembic.config import Config

    try:
        config = Config(str(alembic_ini_path()))
    except FileNotFoundError as exc:
        _say(sys.stderr, f"npsloop-alerts migrate: {exc}")
        return EXIT_USAGE
    config.attributes["database_url"] = settings.database_url
    try:
        command.upgrade(config, args.revision)
    except (SQLAlchemyError, OSError) as exc:
        _say(sys.stderr, f"npsloop-alerts migrate: database error: {exc}")
        return EXIT_DATABASE
    return EXIT_OK


def _import(args: argparse.Namespace, settings: AlertsSettings) -> int:
    kind = ImportKind(args.kind)
    try:
        report = asyncio.run(
            run_import(
                settings.database_url,
                args.file,
                kind,
                skip_invalid=args.skip_invalid,
                progress=not args.no_progress,
            )
        )
    except CsvFileError as exc:
        _say(sys.stderr, f"npsloop-alerts import: {exc}")
        return EXIT_USAGE
    except (SQLAlchemyError, OSError) as exc:
        _say(sys.stderr, f"npsloop-alerts import: database error, nothing applied: {exc}")
        return EXIT_DATABASE
    print_report(report, args.file, sys.stdout)
    return import_exit_code(report)


async def run_import(
    database_url: str, path: Path, kind: ImportKind, *, skip_invalid: bool, progress: bool
) -> ImportReport:
    """One transaction: committed only when the report says it was applied."""
    engine = create_engine(database_url, application_name="npsloop-alerts-import", pool_size=1)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            report = await import_csv(
                session, path, kind, skip_invalid=skip_invalid, progress=progress
            )
            if not report.applied:
                await session.rollback()
        return report
    finally:
        await engine.dispose()


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")


def import_exit_code(report: ImportReport) -> int:
    if not report.applied:
        return EXIT_REJECTED
    return EXIT_PARTIAL if report.rejected else EXIT_OK


def print_report(report: ImportReport, path: Path, out: TextIO) -> None:
    rejected = len(report.rejected)
    if report.applied:
        outcome = (
            f"{report.created} created, {report.updated} updated, {report.unchanged} unchanged"
        )
        if rejected:
            outcome += f", {rejected} rejected and skipped"
    else:
        outcome = f"{rejected} rejected; nothing was applied (fix them or use --skip-invalid)"
    _say(out, f"{path}: {report.rows} {report.kind} row(s): {outcome}")
    for row in report.rejected[:MAX_LISTED_REJECTIONS]:
        _say(out, f"  line {row.line}: {'; '.join(row.reasons)}")
    if rejected > MAX_LISTED_REJECTIONS:
        _say(out, f"  … and {rejected - MAX_LISTED_REJECTIONS} more rejected rows")


if __name__ == "__main__":
    sys.exit(main())
