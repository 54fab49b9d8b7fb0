"""Fixtures for the alerts service on a real PostgreSQL (Polar-style).

* `alerts_database_url`: a fresh database on the session's server, migrated to head once with
  Alembic (the production path, not `create_all`).
* `db_connection` / `session`: each test runs inside one transaction that is rolled back at the
  end. Sessions join it with `create_savepoint`, so code under test that commits (the request
  boundary) commits a savepoint and the test still sees nothing persist.
* `client`: an httpx client on the app (no lifespan) whose request sessions join the test
  transaction, with the admin token set.
* `create_migrated_database`: another fresh, migrated database for tests that must really commit
  (the outbox relay, the CLI in a subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import uvicorn
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from npsloop_alerts.app import create_app
from npsloop_alerts.delivery.http_transport import LeanHttpClient
from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.db import SessionMaker, get_sessionmaker

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "services" / "alerts" / "alembic.ini"
ADMIN_TOKEN = "test-admin-token-4f1c2a9be07d"


class CreateDatabase(Protocol):
    def __call__(self, *, revision: str = "head") -> Awaitable[str]: ...


def migrate(database_url: str, revision: str = "head") -> None:
    """Alembic upgrade, as `npsloop-alerts migrate` does it (call from a thread: it runs a loop)."""
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    command.upgrade(config, revision)


def downgrade(database_url: str, revision: str) -> None:
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = database_url
    command.downgrade(config, revision)


@pytest.fixture(scope="session")
async def create_migrated_database(database_url: str) -> AsyncIterator[CreateDatabase]:
    server = create_async_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    created: list[str] = []

    async def create(*, revision: str = "head") -> str:
        name = f"alerts_{uuid.uuid4().hex[:12]}"
        async with server.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
        await asyncio.to_thread(migrate, url, revision)
        return url

    yield create
    async with server.connect() as connection:
        for name in created:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await server.dispose()


@pytest.fixture(scope="session")
async def alerts_database_url(create_migrated_database: CreateDatabase) -> str:
    return await create_migrated_database()


@pytest.fixture(scope="session")
async def alerts_engine(alerts_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(alerts_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db_connection(alerts_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection in one transaction, rolled back when the test ends."""
    async with alerts_engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest.fixture
def test_sessionmaker(db_connection: AsyncConnection) -> SessionMaker:
    """Sessions inside the test transaction; their commits release savepoints."""
    return async_sessionmaker(
        bind=db_connection,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
        autoflush=False,
    )


@pytest.fixture
async def session(test_sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    async with test_sessionmaker() as session:
        yield session


@pytest.fixture
def alerts_settings(alerts_database_url: str) -> AlertsSettings:
    return AlertsSettings(
        database_url=alerts_database_url,
        admin_token=ADMIN_TOKEN,
        kafka_bootstrap_servers="127.0.0.1:9",  # API tests run without the lifespan
    )


@pytest.fixture
async def client(
    alerts_settings: AlertsSettings, test_sessionmaker: SessionMaker
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(alerts_settings)
    app.dependency_overrides[get_sessionmaker] = lambda: test_sessionmaker
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://alerts.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as http:
        yield http


# --- running the real app (lifespan and all) -------------------------------------------------


@pytest.fixture(params=["httpx client", "lean client"])
async def vendor_client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The vendor adapters' tests run on httpx's own client and on the lean one the service
    uses (`LeanHttpClient`, whose POSTs skip httpx's request objects)."""
    http = (
        httpx.AsyncClient(timeout=2.0)
        if request.param == "httpx client"
        else LeanHttpClient(timeout=2.0, max_connections=8)
    )
    async with http:
        yield http


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_app(settings: AlertsSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app under uvicorn, lifespan and all, on a free port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        ) as client:
            await until(lambda: server.started, "uvicorn did not start")
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


async def until(condition: Callable[[], Any], message: str, within: float = 30) -> None:
    """Poll `condition` (sync or async) until true; fail with `message` after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while not await _evaluate(condition):
        assert asyncio.get_running_loop().time() < deadline, message
        await asyncio.sleep(0.05)


async def _evaluate(condition: Callable[[], Any]) -> bool:
    result = condition()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)
