"""The consumer wrapper against a real broker: commits follow handlers, failures redeliver,
poison goes to the DLQ once, stop() and rebalances commit what was handled.

Helpers here are shared with `test_consumer_resilience.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from npsloop_shared.kafka.consumer import (
    Backoff,
    ConsumedRecord,
    ConsumerTuning,
    KafkaEventConsumer,
    PermanentMessageError,
    RecordHandler,
    RetryPolicy,
)
from npsloop_shared.kafka.dlq import KafkaDeadLetterPublisher

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

FAST_TUNING = ConsumerTuning(
    session_timeout_ms=6_000,  # the broker's group.min.session.timeout.ms
    heartbeat_interval_ms=500,
    poll_timeout_ms=200,
    close_timeout_s=5.0,
    broker_backoff=Backoff(initial_s=0.1, max_s=0.5),
    lag_refresh_s=0.0,
)
FAST_RETRY = RetryPolicy(attempts=3, backoff=Backoff(initial_s=0.02, max_s=0.1))

Headers = list[tuple[str, bytes]]


# --- helpers (real broker, no fakes) -------------------------------------------------------------


async def create_topics(bootstrap: str, *names: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def topic_with_dlq(bootstrap: str, unique_name: str, partitions: int = 1) -> str:
    topic = f"{unique_name}.events"
    await create_topics(bootstrap, topic, f"{topic}.dlq", partitions=partitions)
    return topic


async def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    *,
    key: bytes = b"acct-1",
    headers: Headers | None = None,
    partition: int | None = None,
    spacing_s: float = 0.0,
) -> None:
    """Each value acknowledged before the next is sent, `spacing_s` after it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(
                topic, value, key=key, headers=headers or [], partition=partition
            )
            if spacing_s:
                await asyncio.sleep(spacing_s)
    finally:
        await producer.stop()


async def committed_offsets(bootstrap: str, group: str) -> dict[int, int]:
    """{partition: committed offset} of `group`, read without joining it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def read_topic(bootstrap: str, topic: str, partitions: int = 1) -> list[Any]:
    """Every record currently on `topic`, read from the start without a group."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        records: list[Any] = []
        async with asyncio.timeout(20):
            for tp in tps:
                while await reader.position(tp) < ends[tp]:
                    batch = await reader.getmany(tp, timeout_ms=200)
                    records.extend(batch.get(tp, []))
        return records
    finally:
        await reader.stop()


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 30.0, what: str = ""
) -> None:
    """Wait until `check()` (plain or async) is true; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await _resolved(check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


async def _resolved(value: bool | Awaitable[bool]) -> bool:
    return await value if inspect.isawaitable(value) else value


async def committed_to_be(bootstrap: str, group: str, expected: dict[int, int]) -> None:
    async def matches() -> bool:
        try:
            return await committed_offsets(bootstrap, group) == expected
        except KafkaError as exc:
            if exc.retriable:  # e.g. a fresh broker still electing the group coordinator
                return False
            raise

    await eventually(matches, what=f"committed offsets {expected}")


@dataclass
class RecordingHandler:
    """Records every call; `behaviour` decides what each call does (return or raise)."""

    behaviour: Callable[[ConsumedRecord, int], Awaitable[None]] | None = None
    calls: list[ConsumedRecord] = field(default_factory=list)

    async def __call__(self, record: ConsumedRecord) -> None:
        self.calls.append(record)
        if self.behaviour is not None:
            await self.behaviour(record, self.calls_for(record.offset, record.partition))

    def calls_for(self, offset: int, partition: int = 0) -> int:
        return sum(1 for c in self.calls if (c.partition, c.offset) == (partition, offset))

    def offsets(self) -> list[int]:
        return [c.offset for c in self.calls]

    def has_seen(self, *offsets: int) -> bool:
        return set(offsets) <= set(self.offsets())


def new_consumer(
    bootstrap: str,
    topic: str,
    group: str,
    handler: RecordHandler,
    *,
    retry: RetryPolicy = FAST_RETRY,
    tuning: ConsumerTuning = FAST_TUNING,
    registry: CollectorRegistry | None = None,
    **kwargs: Any,
) -> KafkaEventConsumer:
    return KafkaEventConsumer(
        topics=[topic],
        group_id=group,
        bootstrap_servers=bootstrap,
        handler=handler,
        retry=retry,
        tuning=tuning,
        registry=registry or CollectorRegistry(),
        **kwargs,
    )


def header(record: Any, name: str) -> bytes | None:
    return dict(record.headers).get(name)


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# --- commit after success ------------------------------------------------------------------------


async def test_offset_is_committed_only_after_the_handler_returns(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [b'{"n": 0}'])
    entered, release = asyncio.Event(), asyncio.Event()

    async def wait_for_release(record: ConsumedRecord, call: int) -> None:
        entered.set()
        await release.wait()

    handler = RecordingHandler(wait_for_release)
    registry = CollectorRegistry()
    async with new_consumer(kafka_bootstrap, topic, group, handler, registry=registry):
        await asyncio.wait_for(entered.wait(), 30)
        await asyncio.sleep(1.0)  # several poll cycles: a premature commit would show by now
        assert await committed_offsets(kafka_bootstrap, group) == {}

        release.set()
        await committed_to_be(kafka_bootstrap, group, {0: 1})

    assert handler.offsets() == [0]
    labels = {"group": group, "topic": topic}
    assert metric(registry, "npsloop_consumer_records_total", **labels, outcome="processed") == 1
    assert metric(registry, "npsloop_consumer_handler_seconds_count", **labels) == 1


async def test_records_are_handled_in_order_and_metrics_show_no_lag(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [f'{{"n": {n}}}'.encode() for n in range(25)])
    handler = RecordingHandler()
    registry = CollectorRegistry()
    async with new_consumer(kafka_bootstrap, topic, group, handler, registry=registry):
        await committed_to_be(kafka_bootstrap, group, {0: 25})

        async def lag_is_zero() -> bool:
            lag = registry.get_sample_value(
                "npsloop_consumer_lag", {"group": group, "topic": topic, "partition": "0"}
            )
            return lag == 0

        await eventually(lag_is_zero, what="lag gauge at 0")

    assert handler.offsets() == list(range(25))
    assert [json.loads(c.value or b"")["n"] for c in handler.calls] == list(range(25))


# --- redelivery --------------------------------------------------------------------------------


async def test_a_record_whose_handler_failed_is_redelivered_after_a_stop(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """Handler raises, the process stops during the retry back-off: nothing was committed, so the
    next member of the group gets the record again."""
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [b'{"n": 0}'])

    async def database_down(record: ConsumedRecord, call: int) -> None:
        raise ConnectionRefusedError("database unavailable")

    failing = RecordingHandler(database_down)
    slow_retry = RetryPolicy(attempts=5, backoff=Backoff(initial_s=60, max_s=60))
    consumer = new_consumer(kafka_bootstrap, topic, group, failing, retry=slow_retry)
    await consumer.start()
    await eventually(lambda: failing.has_seen(0), what="first attempt")
    started = time.monotonic()
    await asyncio.wait_for(consumer.stop(), 15)
    assert time.monotonic() - started < 10, "stop() must cut the 60 s back-off short"
    assert await committed_offsets(kafka_bootstrap, group) == {}

    healthy = RecordingHandler()
    async with new_consumer(kafka_bootstrap, topic, group, healthy):
        await committed_to_be(kafka_bootstrap, group, {0: 1})
    assert healthy.offsets() == [0]


async def test_transient_failures_are_retried_then_succeed(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [b'{"n": 0}', b'{"n": 1}'])

    async def fail_twice(record: ConsumedRecord, call: int) -> None:
        if record.offset == 0 and call <= 2:
            raise TimeoutError("smtp timed out")

    handler = RecordingHandler(fail_twice)
    registry = CollectorRegistry()
    retry = RetryPolicy(attempts=5, backoff=Backoff(initial_s=0.05, max_s=0.2))
    async with new_consumer(kafka_bootstrap, topic, group, handler, retry=retry, registry=registry):
        await committed_to_be(kafka_bootstrap, group, {0: 2})

    assert handler.offsets() == [0, 0, 0, 1]
    assert await read_topic(kafka_bootstrap, f"{topic}.dlq") == []
    labels = {"group": group, "topic": topic}
    assert metric(registry, "npsloop_consumer_records_total", **labels, outcome="failed") == 2
    assert metric(registry, "npsloop_consumer_records_total", **labels, outcome="processed") == 2


# --- graceful stop -------------------------------------------------------------------------------


async def test_stop_finishes_the_in_flight_record_commits_it_and_leaves_the_rest(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}'])
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_first(record: ConsumedRecord, call: int) -> None:
        if record.offset == 0:
            entered.set()
            await release.wait()

    first = RecordingHandler(slow_first)
    consumer = new_consumer(kafka_bootstrap, topic, group, first)
    await consumer.start()
    await asyncio.wait_for(entered.wait(), 30)

    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0.5)
    assert not stopping.done(), "stop() must wait for the in-flight record"
    release.set()
    await asyncio.wait_for(stopping, 15)

    assert first.offsets() == [0]
    assert await committed_offsets(kafka_bootstrap, group) == {0: 1}

    second = RecordingHandler()
    async with new_consumer(kafka_bootstrap, topic, group, second):
        await committed_to_be(kafka_bootstrap, group, {0: 3})
    assert second.offsets() == [1, 2]


# --- poison messages -----------------------------------------------------------------------------


async def validate_json(record: ConsumedRecord, call: int) -> None:
    """A handler like the real ones: decode, check the contract, reject what can never work."""
    payload = json.loads(record.value or b"")
    if payload.get("account") == "unknown":
        raise PermanentMessageError("account is not in the directory")


async def test_poison_messages_land_in_the_dlq_once_and_the_consumer_moves_on(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    trace = [("ce_id", b"0b5c5a6e"), ("content-type", b"application/json")]
    await produce(kafka_bootstrap, topic, [b'{"n": 0}'])
    await produce(kafka_bootstrap, topic, [b"{not json", b'{"account": "unknown"}'], headers=trace)
    await produce(kafka_bootstrap, topic, [b'{"n": 3}'])
    handler = RecordingHandler(validate_json)
    registry = CollectorRegistry()

    async with new_consumer(kafka_bootstrap, topic, group, handler, registry=registry):
        await committed_to_be(kafka_bootstrap, group, {0: 4})
    assert handler.offsets() == [0, 1, 2, 3], "permanent errors are not retried"

    dead = await read_topic(kafka_bootstrap, f"{topic}.dlq")
    assert [(r.key, r.value) for r in dead] == [
        (b"acct-1", b"{not json"),
        (b"acct-1", b'{"account": "unknown"}'),
    ]
    undecodable, unknown = dead
    assert header(undecodable, "npsloop_error_class") == b"json.decoder.JSONDecodeError"
    assert header(unknown, "npsloop_error_class") == (
        b"npsloop_shared.kafka.consumer.PermanentMessageError"
    )
    assert header(unknown, "npsloop_error_message") == b"account is not in the directory"
    for offset, record in zip((1, 2), dead, strict=True):
        assert header(record, "npsloop_attempts") == b"1"
        assert header(record, "npsloop_original_topic") == topic.encode()
        assert header(record, "npsloop_original_partition") == b"0"
        assert header(record, "npsloop_original_offset") == str(offset).encode()
        assert list(record.headers)[:2] == trace, "original headers come first, unchanged"
    labels = {"group": group, "topic": topic, "reason": "permanent"}
    assert metric(registry, "npsloop_consumer_dead_letters_total", **labels) == 2

    # A restart of the group must not dead-letter them a second time.
    again = RecordingHandler(validate_json)
    async with new_consumer(kafka_bootstrap, topic, group, again) as consumer:
        await asyncio.wait_for(consumer.wait_until_assigned(), 30)
        await asyncio.sleep(1.0)
    assert again.calls == []
    assert len(await read_topic(kafka_bootstrap, f"{topic}.dlq")) == 2


async def test_a_record_failing_every_attempt_is_dead_lettered_with_its_attempts(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [b'{"n": 0}', b'{"n": 1}'])

    async def always_down(record: ConsumedRecord, call: int) -> None:
        if record.offset == 0:
            raise ConnectionError("slack api unreachable")

    handler = RecordingHandler(always_down)
    registry = CollectorRegistry()
    async with new_consumer(kafka_bootstrap, topic, group, handler, registry=registry):
        await committed_to_be(kafka_bootstrap, group, {0: 2})

    assert handler.offsets() == [0, 0, 0, 1]
    [dead] = await read_topic(kafka_bootstrap, f"{topic}.dlq")
    assert header(dead, "npsloop_error_class") == b"builtins.ConnectionError"
    assert header(dead, "npsloop_error_message") == b"slack api unreachable"
    assert header(dead, "npsloop_attempts") == b"3"
    labels = {"group": group, "topic": topic, "reason": "retries_exhausted"}
    assert metric(registry, "npsloop_consumer_dead_letters_total", **labels) == 1


async def test_a_poison_record_stays_uncommitted_while_the_dlq_is_unreachable(
    kafka_bootstrap: str, unique_name: str, unused_tcp_port: int
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [b"{not json", b'{"n": 1}'])
    handler = RecordingHandler(validate_json)
    registry = CollectorRegistry()
    unreachable_dlq = KafkaDeadLetterPublisher(f"127.0.0.1:{unused_tcp_port}", ack_timeout_s=1.0)

    async with new_consumer(
        kafka_bootstrap, topic, group, handler, registry=registry, dead_letters=unreachable_dlq
    ):
        await eventually(lambda: handler.calls_for(0) >= 3, what="retried later")
    await unreachable_dlq.close()

    assert set(handler.offsets()) == {0}, "nothing after the poison record is handled"
    assert await committed_offsets(kafka_bootstrap, group) == {}
    labels = {"group": group, "topic": topic, "outcome": "dlq_unavailable"}
    assert metric(registry, "npsloop_consumer_records_total", **labels) >= 3

    recovered = RecordingHandler(validate_json)
    async with new_consumer(kafka_bootstrap, topic, group, recovered):
        await committed_to_be(kafka_bootstrap, group, {0: 2})
    assert recovered.offsets() == [0, 1]
    assert [r.value for r in await read_topic(kafka_bootstrap, f"{topic}.dlq")] == [b"{not json"]


# --- batch handler -----------------------------------------------------------------------------


@dataclass
class RecordingBatchHandler:
    """Records every batch; raises `PermanentMessageError` for any batch holding a poison value."""

    batches: list[list[ConsumedRecord]] = field(default_factory=list)
    failed: int = 0

    async def __call__(self, records: Sequence[ConsumedRecord]) -> None:
        if any(record.value == b"poison" for record in records):
            self.failed += 1
            raise PermanentMessageError("a poison record in the batch")
        self.batches.append(list(records))

    def offsets(self) -> list[int]:
        return [record.offset for batch in self.batches for record in batch]


async def test_a_backlog_is_handed_to_the_batch_handler_together_and_committed(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [f'{{"n": {n}}}'.encode() for n in range(40)])
    handler, batch_handler = RecordingHandler(), RecordingBatchHandler()
    registry = CollectorRegistry()
    consumer = new_consumer(
        kafka_bootstrap, topic, group, handler, batch_handler=batch_handler, registry=registry
    )
    async with consumer:
        await committed_to_be(kafka_bootstrap, group, {0: 40})

    # Every record was handled once, in order, and the backlog came in batches of several.
    assert sorted(batch_handler.offsets() + handler.offsets()) == list(range(40))
    assert batch_handler.offsets() == sorted(batch_handler.offsets())
    assert max(len(batch) for batch in batch_handler.batches) > 1
    labels = {"group": group, "topic": topic, "outcome": "processed"}
    assert metric(registry, "npsloop_consumer_records_total", **labels) == 40


async def test_a_failed_batch_is_handled_one_at_a_time_and_its_poison_dead_lettered(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    values = [b'{"n": 0}', b'{"n": 1}', b"poison", b'{"n": 3}', b'{"n": 4}']
    await produce(kafka_bootstrap, topic, values)

    async def refuse_poison(record: ConsumedRecord, call: int) -> None:
        if record.value == b"poison":
            raise PermanentMessageError("not an event")

    handler, batch_handler = RecordingHandler(refuse_poison), RecordingBatchHandler()
    consumer = new_consumer(kafka_bootstrap, topic, group, handler, batch_handler=batch_handler)
    async with consumer:
        await committed_to_be(kafka_bootstrap, group, {0: 5})

    assert batch_handler.failed >= 1
    # Whatever the batch handler did not take went through the record handler, each once.
    assert sorted(batch_handler.offsets() + handler.offsets()) == [0, 1, 2, 3, 4]
    assert handler.calls_for(2) == 1
    dead = await read_topic(kafka_bootstrap, f"{topic}.dlq")
    assert [record.value for record in dead] == [b"poison"]


async def test_a_lingering_fetch_hands_a_trickle_of_records_over_in_one_poll(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [b'{"n": 0}'])
    handler, batch_handler = RecordingHandler(), RecordingBatchHandler()
    # The broker holds each fetch for 3 s unless 1 MiB gathers first, which three small
    # records produced 100 ms apart never do.
    lingering = dataclasses.replace(FAST_TUNING, fetch_min_bytes=1 << 20, fetch_max_wait_ms=3000)
    consumer = new_consumer(
        kafka_bootstrap, topic, group, handler, batch_handler=batch_handler, tuning=lingering
    )
    async with consumer:
        await committed_to_be(kafka_bootstrap, group, {0: 1})
        trickle = [f'{{"n": {n}}}'.encode() for n in (1, 2, 3)]
        await produce(kafka_bootstrap, topic, trickle, spacing_s=0.1)
        await committed_to_be(kafka_bootstrap, group, {0: 4})

    assert handler.offsets() == [0]  # the first poll held only the record produced before it
    assert [[record.offset for record in batch] for batch in batch_handler.batches] == [[1, 2, 3]]


async def test_commits_after_polls_are_spaced_by_the_interval_and_stop_commits_the_rest(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = await topic_with_dlq(kafka_bootstrap, unique_name)
    group = f"{unique_name}-group"
    await produce(kafka_bootstrap, topic, [b'{"n": 0}'])
    handler = RecordingHandler()
    # Longer than any machine's uptime: the monotonic clock starts near boot, so a first commit
    # timed from 0.0 instead of "never" waited for up to an interval on a young machine.
    spaced = dataclasses.replace(FAST_TUNING, commit_interval_s=1e9)
    async with new_consumer(kafka_bootstrap, topic, group, handler, tuning=spaced):
        # The first poll's commit is due at once; then the interval has not passed.
        await committed_to_be(kafka_bootstrap, group, {0: 1})
        await produce(kafka_bootstrap, topic, [b'{"n": 1}', b'{"n": 2}'])
        await eventually(lambda: handler.has_seen(1, 2), what="records 1 and 2 handled")
        await asyncio.sleep(1.0)  # several polls: none of them commits
        assert await committed_offsets(kafka_bootstrap, group) == {0: 1}

    await committed_to_be(kafka_bootstrap, group, {0: 3})
