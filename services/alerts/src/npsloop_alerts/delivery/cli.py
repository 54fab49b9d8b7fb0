"""`npsloop-alerts redrive`: put dead deliveries back in the queue from a shell.

    npsloop-alerts redrive DELIVERY_ID [DELIVERY_ID ...]
    npsloop-alerts redrive --all-dead [--channel slack] [--alert ALERT_ID] [--limit 1000]

Re-driving resets the attempts, makes the delivery due now and re-enables its destination (see
`POST /v1/deliveries/{id}/redrive`). Exit codes: 0 every requested delivery was re-driven;
1 some were not (unknown, or not dead: listed); 2 usage; 4 database unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from typing import Final, TextIO

from sqlalchemy.exc import SQLAlchemyError

from npsloop_alerts.delivery.service import DeliveryFilter, DeliveryService
from npsloop_alerts.routing.rules import Channel
from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.db import create_engine, create_sessionmaker, session_scope

REDRIVE_DESCRIPTION: Final = """\
Put dead deliveries back in the queue, in one transaction: each one's attempts are reset, it is
due now, and its destination is enabled again if it had been disabled. The delivery loop of any
running `npsloop-alerts serve` sends them.

example:
  npsloop-alerts redrive 0b6f4c1e-9d2a-5f3b-8c7d-1e2f3a4b5c6d
  npsloop-alerts redrive --all-dead --channel telegram

exit codes: 0 every requested delivery was re-driven; 1 some were not (unknown, or not dead:
listed); 2 usage; 4 database unavailable
"""

EXIT_OK: Final = 0
EXIT_NOT_ALL: Final = 1
EXIT_USAGE: Final = 2
EXIT_DATABASE: Final = 4


def add_redrive_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "redrive",
        help="re-drive dead deliveries (by id, or every dead one matching filters)",
        description=REDRIVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "ids",
        nargs="*",
        type=uuid.UUID,
        metavar="DELIVERY_ID",
        help="deliveries to re-drive (GET /v1/deliveries?status=dead lists them)",
    )
    parser.add_argument("--all-dead", action="store_true", help="every dead delivery (filtered)")
    parser.add_argument(
        "--channel",
        choices=[channel.value for channel in Channel],
        help="with --all-dead: only this channel",
    )
    parser.add_argument(
        "--alert", type=uuid.UUID, metavar="ALERT_ID", help="with --all-dead: only this alert's"
    )
    parser.add_argument("--limit", type=int, default=1000, help="at most this many (--all-dead)")
    parser.set_defaults(handler=run_redrive_command)


def run_redrive_command(args: argparse.Namespace, settings: AlertsSettings) -> int:
    if bool(args.ids) == bool(args.all_dead):
        sys.stderr.write("npsloop-alerts redrive: give delivery ids or --all-dead (not both)\n")
        return EXIT_USAGE
    where = DeliveryFilter(channel=args.channel, alert_id=args.alert)
    try:
        requested, redriven = asyncio.run(
            redrive(
                settings.database_url, args.ids, where, all_dead=args.all_dead, limit=args.limit
            )
        )
    except (SQLAlchemyError, OSError) as exc:
        sys.stderr.write(f"npsloop-alerts redrive: database error: {type(exc).__name__}\n")
        return EXIT_DATABASE
    return report(requested, redriven, sys.stdout)


async def redrive(
    database_url: str,
    ids: Sequence[uuid.UUID],
    where: DeliveryFilter,
    *,
    all_dead: bool,
    limit: int,
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """One transaction; returns (requested ids, re-driven ids)."""
    engine = create_engine(database_url, application_name="npsloop-alerts-redrive", pool_size=1)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            service = DeliveryService(session)
            requested = await service.dead_ids(where, limit=limit) if all_dead else list(ids)
            return requested, await service.redrive(requested)
    finally:
        await engine.dispose()


def report(requested: Sequence[uuid.UUID], redriven: Sequence[uuid.UUID], out: TextIO) -> int:
    done = set(redriven)
    out.write(f"re-driven: {len(done)} of {len(requested)} deliveries\n")
    for delivery_id in requested:
        state = "re-driven" if delivery_id in done else "not re-driven (unknown or not dead)"
        out.write(f"  {delivery_id}  {state}\n")
    return EXIT_OK if len(done) == len(set(requested)) else EXIT_NOT_ALL
