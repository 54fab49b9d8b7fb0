"""The hot-path database access on asyncpg, against a real PostgreSQL: statements compiled from
SQLAlchemy `text()`, transactions that commit or roll back as `session_scope` does, JSON both
ways, and a pool that opens on first use."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.types import String

from npsloop_shared.driver_db import DRIVER_ERRORS, DriverPool, DriverSql

_CREATE = DriverSql(text("CREATE TABLE IF NOT EXISTS driver_notes (id uuid, body jsonb, tag text)"))
_INSERT = DriverSql(
    text(
        "INSERT INTO driver_notes (id, body, tag)"
        " SELECT :id, :body, tag FROM unnest(:tags) AS tag RETURNING tag"
    ).bindparams(
        bindparam("id", type_=UUID(as_uuid=True)),
        bindparam("body", type_=JSONB),
        bindparam("tags", type_=ARRAY(String)),
    )
)
_READ = DriverSql(
    text("SELECT body, tag FROM driver_notes WHERE id = :id ORDER BY tag").bindparams(
        bindparam("id", type_=UUID(as_uuid=True))
    )
)
_COUNT = DriverSql(
    text("SELECT count(*) FROM driver_notes WHERE id = :id").bindparams(
        bindparam("id", type_=UUID(as_uuid=True))
    )
)


def test_a_statement_compiles_to_numbered_placeholders_in_parameter_order() -> None:
    assert _INSERT.names == ("id", "body", "tags")
    assert "$1::UUID" in _INSERT.sql
    assert "$3::VARCHAR[]" in _INSERT.sql
    assert _INSERT.args({"tags": ["a"], "id": 1, "body": {}, "unused": 2}) == [1, {}, ["a"]]
    with pytest.raises(KeyError, match="body"):
        _INSERT.args({"id": 1, "tags": []})


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[DriverPool]:
    """A pool of one connection (so a test sees the very connection an earlier block used),
    with the test table in place."""
    pool = DriverPool(database_url, application_name="test-driver-db", max_size=1)
    try:
        async with pool.transaction() as connection:
            await _CREATE.execute(connection)
        yield pool
    finally:
        await pool.close()


async def test_a_transaction_commits_json_and_arrays_and_reads_them_back(
    database: DriverPool,
) -> None:
    note = uuid.uuid4()
    body = {"text": "olá 你好", "n": [1, 2.5, None], "nested": {"ok": True}}
    async with database.transaction() as connection:
        inserted = await _INSERT.fetch(connection, {"id": note, "body": body, "tags": ["b", "a"]})
    async with database.transaction() as connection:
        rows = await _READ.fetch(connection, {"id": note})

    assert sorted(row["tag"] for row in inserted) == ["a", "b"]
    assert [(row["body"], row["tag"]) for row in rows] == [(body, "a"), (body, "b")]


async def test_a_transaction_that_raises_is_rolled_back(database: DriverPool) -> None:
    note = uuid.uuid4()
    with pytest.raises(RuntimeError, match="boom"):
        await _insert_then_fail(database, note)
    # The same (only) connection again: nothing of the failed transaction is left.
    async with database.transaction() as connection:
        assert await _COUNT.fetchval(connection, {"id": note}) == 0


async def test_a_plain_connection_commits_each_statement_by_itself(database: DriverPool) -> None:
    note = uuid.uuid4()
    async with database.connection() as connection:
        await _INSERT.execute(connection, {"id": note, "body": [1], "tags": ["a"]})
        assert not connection.is_in_transaction()
    async with database.transaction() as connection:
        assert await _COUNT.fetchval(connection, {"id": note}) == 1


async def _insert_then_fail(database: DriverPool, note: uuid.UUID) -> None:
    async with database.transaction() as connection:
        await _INSERT.execute(connection, {"id": note, "body": {}, "tags": ["x"]})
        raise RuntimeError("boom")


async def test_a_database_that_is_down_fails_the_transaction_not_the_construction() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    database = DriverPool(
        f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing",
        application_name="test-driver-db",
        max_size=1,
    )
    try:
        with pytest.raises(DRIVER_ERRORS):
            async with database.transaction() as connection:
                await _COUNT.fetchval(connection, {"id": uuid.uuid4()})
    finally:
        await database.close()


async def test_the_pool_knows_the_server_process_of_each_connection_it_opened(
    database: DriverPool,
) -> None:
    async with database.connection() as connection:
        pid = await connection.fetchval("SELECT pg_backend_pid()")
    assert pid in database.server_pids
