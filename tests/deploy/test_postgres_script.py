"""deploy/local/postgres.sh runs a real PostgreSQL over TCP that survives its own restart."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from deploy.local.infra import TEST_SERVER_ENV, PostgresServer, last_line_value

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


async def fetch_value(database_url: str, query: str) -> object:
    """Through SQLAlchemy with the asyncpg driver: the URL must work exactly as printed."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.scalar(text(query))
    finally:
        await engine.dispose()


async def execute(database_url: str, *statements: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def postgres_server(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path / "postgres", extra_env=TEST_SERVER_ENV)
    yield server
    server.stop()


async def test_session_database_answers_queries(database_url: str) -> None:
    assert database_url.startswith("postgresql+asyncpg://")
    assert await fetch_value(database_url, "SELECT current_database()") == "npsloop"


async def test_start_status_stop_restart_keeps_address_and_data(
    postgres_server: PostgresServer,
) -> None:
    url = await postgres_server.start_async()
    assert url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    assert url.endswith("/npsloop")
    await execute(url, "CREATE TABLE kept (note text)", "INSERT INTO kept VALUES ('survives')")
    status = postgres_server.run("status")
    assert status.returncode == 0
    assert last_line_value(status.stdout, "NPSLOOP_DATABASE_URL") == url

    await postgres_server.stop_async()

    assert not postgres_server.process_alive()
    assert postgres_server.run("status").returncode == 1
    assert await postgres_server.start_async() == url
    assert await fetch_value(url, "SELECT note FROM kept") == "survives"


def test_start_when_running_prints_the_same_last_line(postgres_server: PostgresServer) -> None:
    url = postgres_server.start()

    again = postgres_server.run("start")

    assert again.returncode == 0
    assert "already running" in again.stdout
    assert again.stdout.rstrip().splitlines()[-1] == f"NPSLOOP_DATABASE_URL={url}"


def test_listens_on_loopback_tcp_only(postgres_server: PostgresServer) -> None:
    postgres_server.start()

    socket_files = list(postgres_server.data_dir.glob(".s.PGSQL.*"))

    assert socket_files == []
    assert (
        "listen_addresses = '127.0.0.1'"
        in (postgres_server.data_dir / "postgresql.conf").read_text()
    )


def test_requested_port_that_is_taken_is_refused(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = PostgresServer(tmp_path / "pg", extra_env={"NPSLOOP_POSTGRES_PORT": str(taken)})

        result = server.run("start")

    assert result.returncode == 1
    assert f"NPSLOOP_POSTGRES_PORT={taken} is not free" in result.stdout


def test_stop_when_never_started_is_harmless(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg")

    server.stop()

    assert server.run("status").returncode == 1
