"""`npsloop-alerts serve` killed with SIGKILL mid-stream and restarted: nothing lost, nothing
sent twice.

Responses keep arriving through ingest (real Kafka) while the alerts process is killed: some are
decided but their offsets not committed, some deliveries are in flight, some retrying. After a
restart every response must have exactly one alert and every owner exactly one message per
channel.

While the process is killed the vendors refuse (503 / SMTP 451), so no send is *in doubt* at the
instant of the kill: a send the vendor accepted but whose outcome was never recorded is the one
documented at-least-once window (see `npsloop_alerts.delivery.loop`), covered by the lease
test of the delivery loop. What this test proves is everything else: the consumer's commit
after the DB transaction, `ce_id` dedupe on redelivery, unique deliveries, and sent deliveries
never being sent again after a restart.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.alerts.alerting_support import System
from tests.alerts.conftest import CreateDatabase
from tests.fakes.server import Scripted

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PER_PHASE = 10
REFUSALS = 60  # scripted 503s per vendor endpoint while the process is killed


@pytest.fixture
async def system(
    kafka_bootstrap: str,
    create_migrated_database: CreateDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[System]:
    async with System.running(
        kafka_bootstrap,
        await create_migrated_database(),
        f"npsloop.responses.v1.crash{uuid.uuid4().hex[:8]}",
        tmp_path_factory.mktemp("crash"),
        extra_alerts_env={
            "NPSLOOP_DELIVERY_MAX_ATTEMPTS": "100",
            "NPSLOOP_DELIVERY_BACKOFF_MAX_SECONDS": "1",
            "NPSLOOP_DELIVERY_LEASE_SECONDS": "4",
        },
    ) as running:
        yield running


async def _post_all(system: System, accounts: list[str], pause: float = 0.05) -> None:
    for account in accounts:
        await system.post(
            response_id=f"r-{uuid.uuid4().hex[:8]}",
            account_id=account,
            score=2,
            comment=f"Complaint for {account}.",
        )
        await asyncio.sleep(pause)


async def _all_sent(system: System, accounts: list[str]) -> None:
    for account in accounts:
        for channel in ("email", "slack", "telegram"):
            await system.wait_delivery(account, channel, "sent", within=90)


def _refuse_everything(system: System, addresses: list[str]) -> tuple[int, int]:
    """Vendors answer 503 / 451 for a while; returns the request counts before the refusals."""
    system.slack.script(*[Scripted(503, text="service_unavailable")] * REFUSALS)
    system.telegram.script(
        *[Scripted(503, json={"ok": False, "error_code": 503, "description": "busy"})] * REFUSALS
    )
    for address in addresses:
        system.mail.refuse[address] = "451 4.3.2 Try again later"
    return len(system.slack.received()), len(system.telegram.received())


async def test_sigkill_mid_stream_then_restart_loses_nothing_and_sends_nothing_twice(
    system: System,
) -> None:
    owners = [
        await system.owner(
            email=f"k{n}@acme.example", slack_channel=f"C0KILL{n}", telegram_chat_id=str(3000 + n)
        )
        for n in range(3 * PER_PHASE)
    ]
    accounts = [account for account, _ in owners]
    before, during, after = (
        accounts[:PER_PHASE],
        accounts[PER_PHASE : 2 * PER_PHASE],
        accounts[2 * PER_PHASE :],
    )

    # Steady state: the first responses are delivered and recorded.
    await _post_all(system, before)
    await _all_sent(system, before)

    # Mid-stream: responses keep coming while the process dies.
    slack_seen, telegram_seen = _refuse_everything(
        system, [f"k{n}@acme.example" for n in range(3 * PER_PHASE)]
    )
    posting = asyncio.create_task(_post_all(system, during, pause=0.1))
    await system.telegram.wait_for(telegram_seen + 3)  # refusals under way: mid-stream
    assert system.alerts is not None
    killed = system.alerts
    killed.kill()
    assert killed.process.returncode == -signal.SIGKILL
    # Premise: every send in flight at the kill was refused, none is in doubt.
    assert len(system.slack.received()) - slack_seen < REFUSALS
    assert len(system.telegram.received()) - telegram_seen < REFUSALS
    await posting  # ingest keeps accepting: Kafka holds them for the restarted process

    system.mail.refuse.clear()
    await system.start_alerts()
    await _post_all(system, after)
    await _all_sent(system, accounts)

    for number, account in enumerate(accounts):
        assert len(await system.alerts_of(account)) == 1, account
        assert len(system.mail.to(f"k{number}@acme.example")) == 1, account
        chat = [m for m in system.slack.messages.values() if m.channel == f"C0KILL{number}"]
        assert len(chat) == 1, account
        assert len(system.telegram.chat(str(3000 + number))) == 1, account
