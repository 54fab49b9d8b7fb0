"""The engine's errors on real PostgreSQL: never carry a statement's parameters, and say when the
client's value was what the database refused."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from npsloop_shared.db import create_engine, unstorable_value

pytestmark = pytest.mark.timeout(60)


async def _error_of(database_url: str, statement: str, **parameters: object) -> DBAPIError:
    engine = create_engine(database_url, application_name="test-db-errors", pool_size=1)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as raised:
                await connection.execute(text(statement), parameters)
    finally:
        await engine.dispose()
    return raised.value


async def test_a_database_error_does_not_carry_the_statements_parameters(
    database_url: str,
) -> None:
    error = await _error_of(
        database_url, "SELECT CAST(:email AS text), 1 / :zero", email="pat@example.com", zero=0
    )

    assert "division by zero" in str(error)
    assert "pat@example.com" not in str(error)
    assert unstorable_value(error) is not None  # PostgreSQL's class 22, a data exception


@pytest.mark.parametrize(
    ("statement", "value", "detail"),
    [
        ("SELECT CAST(:value AS text)", "pat@example.com\x00", "NUL character"),
        ("SELECT CAST(:value AS bigint)", 2**64, "out of range"),
    ],
    ids=["NUL in text", "past bigint"],
)
async def test_a_value_the_database_refuses_is_the_clients_mistake(
    database_url: str, statement: str, value: object, detail: str
) -> None:
    error = await _error_of(database_url, statement, value=value)

    problem = unstorable_value(error)

    assert problem is not None
    assert problem.status == 422
    assert detail in problem.detail
    assert "pat@example.com" not in str(error)


async def test_an_error_of_ours_is_not_blamed_on_the_client(database_url: str) -> None:
    error = await _error_of(database_url, "SELECT * FROM no_such_table WHERE id = :id", id=1)

    assert unstorable_value(error) is None
