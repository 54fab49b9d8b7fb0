"""Hot-path database access straight on asyncpg, for the few statements a loop runs many times
a second.

SQLAlchemy's execution layer costs about 0.2 ms of CPU per statement and 0.4 ms per
transaction on top of asyncpg (measured against a real PostgreSQL): at a hundred transactions
a second that is a tenth of a core. The statements stay SQLAlchemy `text()` constructs (one
place for their SQL, typed binds), compiled once to asyncpg's `$n` form by `DriverSql`; they run
on a `DriverPool` connection inside one transaction, which the caller's `transaction()` block
commits (or rolls back when it raises), like `session_scope`.

Everything else (the API, the relays, migrations) stays on SQLAlchemy sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.sql.elements import TextClause

# What a failed database call raises here (the loops back off and retry on these).
DRIVER_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_DIALECT: Final = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


class DriverSql:
    """A `text()` statement compiled once for asyncpg: `$n` placeholders (with the casts its
    typed binds ask for) and the order its named parameters go in."""

    __slots__ = ("names", "sql")

    def __init__(self, statement: TextClause) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        self.sql: str = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """Raises KeyError naming a missing parameter."""
        return [params[name] for name in self.names]

    async def fetch(self, connection: Any, params: Mapping[str, Any] | None = None) -> list[Any]:
        return list(await connection.fetch(self.sql, *self.args(params or {})))

    async def fetchval(self, connection: Any, params: Mapping[str, Any] | None = None) -> Any:
        return await connection.fetchval(self.sql, *self.args(params or {}))

    async def execute(self, connection: Any, params: Mapping[str, Any] | None = None) -> None:
        await connection.execute(self.sql, *self.args(params or {}))


def asyncpg_dsn(database_url: str) -> str:
    """`postgresql+asyncpg://…` (SQLAlchemy) → `postgresql://…` (asyncpg)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class DriverPool:
    """Up to `max_size` asyncpg connections, opened on first use (so a database that is down at
    start-up is a retried error of the first transaction, not a crash).

    A connection goes back to the pool without asyncpg's reset query (one more round trip per
    transaction): every use is one transaction that has ended by then, and nothing here
    LISTENs, holds advisory locks or changes session settings."""

    def __init__(self, database_url: str, *, application_name: str, max_size: int) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._application_name = application_name
        self._max_size = max_size
        self._pool: Any = None
        self._opening = asyncio.Lock()
        # Server process ids of the connections this pool opened (a NOTIFY names the backend
        # that sent it, so a listener can tell this pool's apart). Ids of connections since
        # closed stay: a reconnect is rare, and the server may reuse an id only much later.
        self.server_pids: set[int] = set()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A connection inside a transaction: committed when the block succeeds, rolled back
        when it raises."""
        pool = self._pool or await self._open()
        async with pool.acquire() as connection, connection.transaction():
            yield connection

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection without a transaction: each statement commits by itself. For work
        that is one statement (atomic on its own), it saves the BEGIN and COMMIT round trips."""
        pool = self._pool or await self._open()
        async with pool.acquire() as connection:
            yield connection

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _open(self) -> Any:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._max_size,
                    init=self._prepare_connection,
                    reset=_keep_as_is,
                    server_settings={"application_name": self._application_name},
                )
            return self._pool

    async def _prepare_connection(self, connection: Any) -> None:
        await _set_json_codecs(connection)
        self.server_pids.add(connection.get_server_pid())


async def _set_json_codecs(connection: Any) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            encoder=_json_text,
            decoder=orjson.loads,
            schema="pg_catalog",
            format="text",
        )


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _keep_as_is(connection: Any) -> None:
    """asyncpg's pool `reset` hook: nothing to undo (see `DriverPool`)."""
