"""The claim paces what it takes: `claim_due_deliveries()` on a real PostgreSQL.

Each test works in a transaction of a database of its own module that is rolled back, so the
claims see only the rows the test wrote. `now()` is the transaction's start, as in the claim.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from npsloop_alerts.delivery.pacing import TELEGRAM_BOT_KEY, PacingPolicy
from npsloop_alerts.delivery.repository import Claimed, DeliveryRepository
from npsloop_alerts.delivery.settings import DeliverySettings
from npsloop_shared.driver_db import DriverPool
from tests.alerts.conftest import CreateDatabase

LIFTED = PacingPolicy(
    slack_interval=0,
    telegram_chat_interval=0,
    telegram_bot_interval=0,
    email_interval=0,
    webhook_interval=0,
    window=5,
)


@pytest.fixture(scope="module")
async def pacing_database_url(create_migrated_database: CreateDatabase) -> str:
    return await create_migrated_database()


@pytest.fixture
async def connection(pacing_database_url: str) -> AsyncIterator[Any]:
    """A connection as the delivery loop gets one (the pool's JSON codecs), in a transaction
    that is rolled back."""
    database = DriverPool(pacing_database_url, application_name="test-pacing", max_size=1)
    try:
        async with database.connection() as connection:
            transaction = connection.transaction()
            await transaction.start()
            try:
                yield connection
            finally:
                await transaction.rollback()
    finally:
        await database.close()


async def now(connection: Any) -> datetime:
    value: datetime = await connection.fetchval("SELECT now()")
    return value


async def queue(
    connection: Any, *destinations: tuple[str, str], status: str = "pending", attempts: int = 0
) -> list[uuid.UUID]:
    """One alert with a delivery per (channel, destination), due in this order."""
    alert_id = uuid.uuid4()
    await connection.execute(
        """
        INSERT INTO alerts (id, source, response_id, revision, account_id, account_known,
            account_name, bucket, score, kind, submitted_at, received_at, status)
        VALUES ($1, 'test', $2, 1, 'acme', true, 'Acme', 'detractor', 3, 'relational',
            now(), now(), 'open')
        """,
        alert_id,
        str(alert_id),
    )
    ids = []
    for n, (channel, destination) in enumerate(destinations):
        delivery_id = uuid.uuid4()
        await connection.execute(
            """
            INSERT INTO deliveries (id, alert_id, purpose, recipient_id, recipient_role,
                recipient_name, locale, timezone, channel, destination, destination_key, status,
                attempts, not_before, next_attempt_at, content_revision)
            VALUES ($1, $2, 'alert', $3, 'owner', 'Olivia', 'en', 'UTC', $4, $5, $6, $7, $8,
                now(), now() - make_interval(secs => $9), 1)
            """,
            delivery_id,
            alert_id,
            f"person-{n}",
            channel,
            destination,
            f"{channel}:{destination}",
            status,
            attempts,
            100.0 - n,
        )
        ids.append(delivery_id)
    return ids


async def claim(connection: Any, pacing: PacingPolicy, limit: int = 50) -> Claimed:
    return await DeliveryRepository(connection).claim_due(limit, uuid.uuid4(), 60, pacing)


async def next_allowed(connection: Any, key: str) -> datetime | None:
    value: datetime | None = await connection.fetchval(
        "SELECT next_allowed_at FROM delivery_destinations WHERE key = $1", key
    )
    return value


def paced(window: float = 5, **intervals: float) -> PacingPolicy:
    return PacingPolicy(**{**_fields(LIFTED), **intervals, "window": window})


def _fields(policy: PacingPolicy) -> dict[str, float]:
    return {name: getattr(policy, name) for name in PacingPolicy.__slots__}


async def test_messages_to_one_destination_are_spaced_by_its_interval(connection: Any) -> None:
    ids = await queue(connection, *[("slack", "C1")] * 3)
    started = await now(connection)

    claimed = await claim(connection, paced(slack_interval=1.0))

    assert [d.id for d in claimed.to_send] == ids
    assert [d.send_delay for d in claimed.to_send] == [0, 1, 2]
    assert await next_allowed(connection, "slack:C1") == started + timedelta(seconds=3)


async def test_slots_beyond_the_window_go_back_to_the_queue_without_taking_a_slot(
    connection: Any,
) -> None:
    started = await now(connection)
    await connection.execute(
        "INSERT INTO delivery_destinations (key, next_allowed_at) VALUES ('slack:C1', $1)",
        started + timedelta(seconds=1),
    )
    ids = await queue(connection, *[("slack", "C1")] * 4)

    claimed = await claim(connection, paced(window=2, slack_interval=1.0))

    assert [(d.id, d.send_delay) for d in claimed.to_send] == [(ids[0], 1), (ids[1], 2)]
    assert [row.given_back for row in claimed.rows] == [False, False, True, True]
    given_back = await connection.fetch(
        "SELECT id, status, attempts, next_attempt_at, claim_token FROM deliveries"
        " WHERE id = ANY($1::uuid[]) ORDER BY next_attempt_at",
        ids[2:],
    )
    assert [(r["id"], r["status"], r["attempts"], r["claim_token"]) for r in given_back] == [
        (ids[2], "pending", 0, None),
        (ids[3], "pending", 0, None),
    ]
    assert [r["next_attempt_at"] for r in given_back] == [
        started + timedelta(seconds=3),
        started + timedelta(seconds=4),
    ]
    assert await next_allowed(connection, "slack:C1") == started + timedelta(seconds=3)
    assert claimed.next_due_in == 3  # the first row given back, not the claimed rows' lease


async def test_a_telegram_message_waits_for_both_its_chat_and_the_bot(connection: Any) -> None:
    started = await now(connection)
    await connection.execute(
        "INSERT INTO delivery_destinations (key, next_allowed_at) VALUES ($1, $2)",
        TELEGRAM_BOT_KEY,
        started + timedelta(seconds=0.25),
    )
    first, second = await queue(connection, ("telegram", "1"), ("telegram", "2"))

    claimed = await claim(connection, paced(telegram_chat_interval=1.0, telegram_bot_interval=0.5))

    assert [(d.id, d.send_delay) for d in claimed.to_send] == [(first, 0.25), (second, 0.75)]
    assert await next_allowed(connection, TELEGRAM_BOT_KEY) == started + timedelta(seconds=1.25)
    assert await next_allowed(connection, "telegram:1") == started + timedelta(seconds=1.25)


async def test_vendor_limits_are_the_defaults_and_zero_lifts_them(connection: Any) -> None:
    defaults = PacingPolicy.from_settings(DeliverySettings())
    assert (defaults.slack_interval, defaults.telegram_chat_interval) == (1.0, 1.0)
    assert defaults.telegram_bot_interval == pytest.approx(1 / 30)
    assert defaults.email_interval == 0  # no limit on mail by default
    await queue(connection, *[("email", "a@b.c")] * 2, *[("slack", "C1")] * 2)

    by_default = await claim(connection, defaults)

    assert [d.send_delay for d in by_default.to_send] == [0, 0, 0, 1]
    assert await next_allowed(connection, "email:a@b.c") is None  # unpaced: no row at all

    await queue(connection, *[("slack", "C2")] * 2, *[("telegram", "7")] * 2)
    lifted = await claim(connection, LIFTED)

    assert [d.send_delay for d in lifted.to_send] == [0, 0, 0, 0]
    assert await next_allowed(connection, "slack:C2") is None
    assert await next_allowed(connection, TELEGRAM_BOT_KEY) is None


async def test_a_disabled_destination_is_claimed_unpaced_and_said_to_be_disabled(
    connection: Any,
) -> None:
    await connection.execute(
        "INSERT INTO delivery_destinations (key, disabled_at) VALUES ('slack:C9', now())"
    )
    await queue(connection, *[("slack", "C9")] * 2)

    claimed = await claim(connection, paced(slack_interval=1.0))

    assert [(d.destination_disabled, d.send_delay) for d in claimed.to_send] == [
        (True, 0),
        (True, 0),
    ]


async def test_a_lease_found_expired_is_recorded_as_an_attempt(connection: Any) -> None:
    (expired,) = await queue(connection, ("slack", "C3"), status="in_flight", attempts=2)
    (fresh,) = await queue(connection, ("slack", "C4"))

    claimed = await claim(connection, LIFTED)

    assert {row.delivery.id: row.lease_expired for row in claimed.rows} == {
        expired: True,
        fresh: False,
    }
    assert [d.attempts for d in claimed.to_send] == [3, 1]
    attempts = await connection.fetch(
        "SELECT delivery_id, number, operation, outcome FROM delivery_attempts"
    )
    assert [tuple(a.values()) for a in attempts] == [(expired, 2, "send", "lease_expired")]


async def test_nothing_due_claims_nothing_and_leaves_the_wait_to_the_loop(
    connection: Any,
) -> None:
    (later,) = await queue(connection, ("slack", "C5"))
    await connection.execute(
        "UPDATE deliveries SET next_attempt_at = now() + interval '30 seconds' WHERE id = $1",
        later,
    )

    assert await claim(connection, LIFTED) == Claimed([], None)
