"""Migration 0001 on real PostgreSQL: it round-trips, seeds its data, and matches the models."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import npsloop_alerts.models  # noqa: F401 - every table on Base.metadata
from npsloop_alerts.db import Base
from tests.alerts.conftest import CreateDatabase, downgrade, migrate

DIRECTORY_TABLES = {"people", "accounts", "team", "directory_outbox", "routing_rules"}


def _directory_differences(connection: Connection) -> list[Any]:
    def directory_name(name: str | None, type_: str, parent: Any) -> bool:
        return type_ != "table" or name in DIRECTORY_TABLES

    def directory_object(
        item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        return type_ != "table" or name in DIRECTORY_TABLES

    context = MigrationContext.configure(
        connection,
        opts={
            "include_name": directory_name,
            "include_object": directory_object,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def test_models_match_the_migrated_schema(alerts_engine: AsyncEngine) -> None:
    async with alerts_engine.connect() as connection:
        differences = await connection.run_sync(_directory_differences)

    assert differences == []


async def _scalar(url: str, sql: str) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.scalar(text(sql))
    finally:
        await engine.dispose()


async def test_0001_downgrades_and_upgrades_again(create_migrated_database: CreateDatabase) -> None:
    url = await create_migrated_database(revision="0001")

    await asyncio.to_thread(downgrade, url, "base")
    tables = await _scalar(
        url, "SELECT count(*) FROM pg_tables WHERE tablename IN ('people', 'accounts', 'team')"
    )
    await asyncio.to_thread(migrate, url, "0001")

    assert tables == 0
    assert await _scalar(url, "SELECT version_num FROM alembic_version_alerts") == "0001"
    assert await _scalar(url, "SELECT count(*) FROM routing_rules WHERE enabled") == 4
    assert await _scalar(url, "SELECT count(*) FROM team WHERE id = 1") == 1


async def test_the_team_row_is_a_singleton(alerts_engine: AsyncEngine) -> None:
    async with alerts_engine.connect() as connection:
        transaction = await connection.begin()
        try:
            await connection.execute(text("INSERT INTO team (id) VALUES (2)"))
        except Exception as refused:
            message = str(refused)
        else:
            message = ""
        finally:
            await transaction.rollback()

    assert "ck_team_singleton" in message
