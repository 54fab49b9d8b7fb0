"""Database plumbing: engines, session factories and the transaction boundary.

Who commits: never a repository, never a service. The edge does — a request (through
`DbSession`), a Kafka message handler or a job (through `session_scope`). Either the whole unit of
work commits, or it rolls back and the error propagates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from asyncpg.exceptions import (  # type: ignore[import-untyped]
    CharacterNotInRepertoireError,
    DataError,
    UntranslatableCharacterError,
)
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from npsloop_shared.errors import ValidationFailed, error_response

SessionMaker = async_sessionmaker[AsyncSession]

# The lifespan state key under which every service exposes its session factory.
SESSIONMAKER_STATE_KEY = "sessionmaker"


def create_engine(
    url: str,
    *,
    application_name: str,
    pool_size: int = 5,
    max_overflow: int = 5,
    echo: bool = False,
) -> AsyncEngine:
    """An asyncpg engine; `application_name` shows up in `pg_stat_activity`."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        echo=echo,
        # A statement's error message would otherwise carry its parameters (names, emails,
        # comments) into whatever logs the error.
        hide_parameters=True,
        json_deserializer=orjson.loads,  # jsonb columns: several times faster than json.loads
        connect_args={"server_settings": {"application_name": application_name}},
    )


def create_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    # expire_on_commit=False: objects stay readable after the boundary commits (response models).
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def session_scope(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits when the block succeeds, rolls back when it raises."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


async def ping(engine: AsyncEngine) -> None:
    """Raises when the database cannot answer `SELECT 1` (readiness probes)."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def get_sessionmaker(request: Request) -> SessionMaker:
    """The session factory the lifespan put into the request state (tests override this)."""
    sessionmaker: SessionMaker = getattr(request.state, SESSIONMAKER_STATE_KEY)
    return sessionmaker


async def get_db_session(
    sessionmaker: Annotated[SessionMaker, Depends(get_sessionmaker)],
) -> AsyncIterator[AsyncSession]:
    """Request-scoped session; the request commits when the endpoint returned without error."""
    async with session_scope(sessionmaker) as session:
        yield session


# scope="function": the commit runs when the endpoint returns, *before* the response is sent, so a
# failing commit becomes an error response instead of a 2xx for data that was never stored.
DbSession = Annotated[AsyncSession, Depends(get_db_session, scope="function")]


class UnstorableValue(ValidationFailed):
    """A request value PostgreSQL cannot store or compare: the NUL character in text, or a
    number or date beyond its column's range. The edges validate what they know; this is the
    answer for whatever reaches the database anyway."""


def unstorable_value(exc: BaseException) -> UnstorableValue | None:
    """The client's mistake behind a database error, or None when the error is ours."""
    causes = list(_causes(exc))
    if any(
        isinstance(c, CharacterNotInRepertoireError | UntranslatableCharacterError) for c in causes
    ):
        return UnstorableValue(
            "Text in the request contains the NUL character (U+0000), which cannot be stored."
        )
    if any(isinstance(c, OverflowError) for c in causes):  # asyncpg's check before sending
        return UnstorableValue("A number or date in the request is out of range.")
    if any(isinstance(c, DataError) for c in causes):  # PostgreSQL's class 22, "data exception"
        return UnstorableValue("A value in the request cannot be stored or compared.")
    return None


def install_database_problem_handlers(app: FastAPI) -> None:
    """Answer 422 problem+json when a request's value is what the database refused."""

    async def on_database_error(request: Request, exc: Exception) -> Response:
        problem = unstorable_value(exc)
        if problem is None:
            raise exc  # ours: the app's catch-all answers 500 and the error is logged
        return error_response(problem, instance=request.url.path)

    app.add_exception_handler(DBAPIError, on_database_error)  # through SQLAlchemy
    app.add_exception_handler(DataError, on_database_error)  # asyncpg used directly


def _causes(exc: BaseException) -> Iterator[BaseException]:
    # SQLAlchemy wraps the driver's error (`orig`), which asyncpg chains to its cause.
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending.extend([current.__cause__, orig if isinstance(orig, BaseException) else None])
