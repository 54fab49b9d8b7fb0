"""Alembic environment for the alerts service (async, asyncpg).

The database URL, first match wins: `config.attributes["database_url"]` (programmatic use),
`NPSLOOP_DATABASE_URL`, the alerts settings' default. A caller may also pass an open connection
as `config.attributes["connection"]` (tests do, to migrate inside their own event loop).

The version table is `alembic_version_alerts`, so other services can migrate the same database
with their own history. Concurrent upgrades (several replicas starting) serialise on an
advisory lock.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import npsloop_alerts.models  # noqa: F401 - registers every feature's tables on Base.metadata
from npsloop_alerts.db import Base
from npsloop_alerts.settings import AlertsSettings

VERSION_TABLE = "alembic_version_alerts"
MIGRATION_LOCK_KEY = 0x6E70_736C_6F6F_7000  # "npsloop" + 0

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    configured = config.attributes.get("database_url") or os.environ.get("NPSLOOP_DATABASE_URL")
    return str(configured or AlertsSettings().database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
    )
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
