"""The consumer wrapper when things go wrong around it: a member joins (rebalance), the process
dies mid-record, the broker goes away and comes back."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.local.infra import KafkaBroker
from npsloop_shared.kafka.consumer import ConsumedRecord
from tests.shared.test_consumer import (
    RecordingHandler,
    committed_offsets,
    committed_to_be,
    create_topics,
    eventually,
    new_consumer,
    produce,
    topic_with_dlq,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[2]


async def test_a_rebalance_commits_the_in_flight_record_and_loses_nothing(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """A second member joins while the first is mid-record: the revocation waits for that record,
    commits it, and each record is handled exactly once across both members."""
    topic = await topic_with_dlq(kafka_bootstrap, unique_name, partitions=2)
    group = f"{unique_name}-group"
    per_partition = 15
    for partition in (0, 1):
        values = [f'{{"n": {n}}}'.encode() for n in range(per_partition)]
        await produce(kafka_bootstrap, topic, values, partition=partition)

    async def slow(record: ConsumedRecord, call: int) -> None:
        await asyncio.sleep(0.1)

    first, second = RecordingHandler(slow), RecordingHandler(slow)
    async with new_consumer(kafka_bootstrap, topic, group, first):
        await eventually(lambda: len(first.calls) >= 3, what="first member busy")
        async with new_consumer(kafka_bootstrap, topic, group, second):
            await committed_to_be(kafka_bootstrap, group, {0: per_partition, 1: per_partition})

    handled = Counter((c.partition, c.offset) for c in [*first.calls, *second.calls])
    expected = {(p, o) for p in (0, 1) for o in range(per_partition)}
    assert set(handled) == expected, "every record handled"
    assert [key for key, times in handled.items() if times > 1] == [], "none handled twice"
    assert second.calls, "the new member took over a partition"


CRASHING_MEMBER = """
import asyncio, os, sys
from npsloop_shared.kafka.consumer import ConsumerTuning, KafkaEventConsumer

bootstrap, topic, group, journal = sys.argv[1:5]

async def handler(record):
    with open(journal, "a") as out:  # the handler's side effect, like a DB transaction
        out.write(f"{record.offset}\\n")
    if record.value == b"crash":
        os._exit(17)  # the process dies before the offset can be committed

async def main():
    tuning = ConsumerTuning(session_timeout_ms=6000, heartbeat_interval_ms=500, poll_timeout_ms=200)
    consumer = KafkaEventConsumer(
        topics=[topic], group_id=group, bootstrap_servers=bootstrap, handler=handler, tuning=tuning
    )
    await consumer.start()
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_a_process_dying_mid_record_gets_that_record_redelivered(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    journal = tmp_path / "handled.txt"
    await produce(kafka_bootstrap, topic, [b'{"n": 0}'])
    member = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", CRASHING_MEMBER, kafka_bootstrap, topic, group, str(journal)),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        await committed_to_be(kafka_bootstrap, group, {0: 1})
        await produce(kafka_bootstrap, topic, [b"crash"])
        exit_code = await asyncio.wait_for(member.wait(), 60)
    finally:
        if member.returncode is None:
            member.kill()
            await member.wait()
    assert exit_code == 17
    assert journal.read_text().split() == ["0", "1"]
    assert await committed_offsets(kafka_bootstrap, group) == {0: 1}

    survivor = RecordingHandler()
    async with new_consumer(kafka_bootstrap, topic, group, survivor):
        await committed_to_be(kafka_bootstrap, group, {0: 2})
    assert survivor.offsets() == [1], "only the uncommitted record comes back"


async def test_the_consumer_survives_the_broker_being_down_at_start_and_going_away_later(
    kafka_broker_factory: Callable[[], KafkaBroker], unique_name: str
) -> None:
    broker = kafka_broker_factory()
    bootstrap = broker.bootstrap_servers
    topic = f"{unique_name}.events"
    await create_topics(bootstrap, topic, f"{topic}.dlq")
    group = f"{unique_name}-group"
    await produce(bootstrap, topic, [b'{"n": 0}'])
    handler = RecordingHandler()

    await broker.stop_async()
    async with new_consumer(bootstrap, topic, group, handler) as consumer:
        await asyncio.sleep(2)  # connecting fails and backs off meanwhile
        assert consumer.running
        await _restart_on_the_same_address(broker, bootstrap)
        await committed_to_be(bootstrap, group, {0: 1})

        await broker.stop_async()
        await asyncio.sleep(3)  # polls, heartbeats and commits fail meanwhile
        assert consumer.running
        await _restart_on_the_same_address(broker, bootstrap)
        await produce(bootstrap, topic, [b'{"n": 1}'])
        await eventually(lambda: handler.has_seen(1), timeout_s=90, what="record after restart")
        await committed_to_be(bootstrap, group, {0: 2})
    assert handler.offsets() == [0, 1]


async def _restart_on_the_same_address(broker: KafkaBroker, bootstrap: str) -> None:
    await broker.start_async()
    assert broker.bootstrap_servers == bootstrap, "the consumer only knows the old address"
