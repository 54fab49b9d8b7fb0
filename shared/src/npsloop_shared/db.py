"""Database plumbing: engines, session factories and the transaction boundary.

Who commits: never a repository, never a service. The edge does — a request (through
`DbSession`), a Kafka message handler or a job (through `session_scope`). Either the whole unit of
work commits, or it rolls back and the error propagates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

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
