"""deploy/local/kafka.sh starts a real broker, keeps its contract and stops it for good."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.local.infra import (
    REPO_ROOT,
    TEST_SERVER_ENV,
    InfrastructureError,
    KafkaBroker,
    KafkaBrokerFactory,
    last_line_value,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


async def create_topic(bootstrap_servers: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap_servers: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(bootstrap_servers: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        while len(records) < expected:
            batch = await consumer.getmany(timeout_ms=10_000)
            if not batch:
                break
            records += [(r.key, r.value) for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return records


async def test_session_broker_round_trips_a_record(kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"deploy.roundtrip.{unique_name}"
    await create_topic(kafka_bootstrap, topic)

    await produce(kafka_bootstrap, topic, b"acct-1", b"hello")

    assert await read_all(kafka_bootstrap, topic, expected=1) == [(b"acct-1", b"hello")]


async def test_start_status_stop_restart_keeps_address_and_data(
    kafka_broker_factory: KafkaBrokerFactory, unique_name: str
) -> None:
    broker = kafka_broker_factory()
    first_address = broker.bootstrap_servers
    topic = f"deploy.durable.{unique_name}"
    await create_topic(first_address, topic)
    await produce(first_address, topic, b"k", b"kept across restarts")
    status = broker.run("status")
    assert status.returncode == 0
    assert last_line_value(status.stdout, "NPSLOOP_KAFKA_BOOTSTRAP_SERVERS") == first_address

    await broker.stop_async()

    assert not broker.process_alive()
    stopped = broker.run("status")
    assert stopped.returncode == 1
    assert "stopped" in stopped.stdout
    assert await broker.start_async() == first_address
    assert await read_all(first_address, topic, expected=1) == [(b"k", b"kept across restarts")]


def test_start_when_running_prints_the_same_last_line(
    kafka_broker_factory: KafkaBrokerFactory,
) -> None:
    broker = kafka_broker_factory()

    again = broker.run("start")

    assert again.returncode == 0
    assert "already running" in again.stdout
    assert again.stdout.rstrip().splitlines()[-1] == (
        f"NPSLOOP_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}"
    )


def test_second_start_reuses_the_jar_cache(
    kafka_broker_factory: KafkaBrokerFactory, tmp_path: Path
) -> None:
    kafka_broker_factory()  # the first start fills the cache if this machine never had it
    default_cache = REPO_ROOT / ".cache" / "kafka-4.1.2"
    lib_dir = Path(os.environ.get("NPSLOOP_KAFKA_CACHE_DIR", default_cache)) / "lib"
    cache_marker_mtime = (lib_dir / ".complete").stat().st_mtime_ns
    second = KafkaBroker(tmp_path / "kafka", extra_env=TEST_SERVER_ENV)

    try:
        output = second.run("start").stdout
    finally:
        second.stop()

    assert "resolving" not in output
    assert output.rstrip().splitlines()[-1].startswith("NPSLOOP_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:")
    assert (lib_dir / ".complete").stat().st_mtime_ns == cache_marker_mtime
    assert any(jar.name == "kafka_2.13-4.1.2.jar" for jar in lib_dir.iterdir())


def test_failed_start_exits_non_zero_with_the_broker_log(tmp_path: Path) -> None:
    # A JVM that cannot even allocate its heap: the script must say so, not hang or pretend.
    broker = KafkaBroker(
        tmp_path / "kafka",
        extra_env={"NPSLOOP_KAFKA_PORT": "", "NPSLOOP_KAFKA_JVM_OPTS": "-Xmx1k"},
    )

    with pytest.raises(InfrastructureError) as failure:
        broker.start()

    message = str(failure.value)
    assert "formatting the storage failed" in message
    assert "heap" in message
    assert not broker.process_alive()


def test_requested_port_that_is_taken_is_refused(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        broker = KafkaBroker(tmp_path / "kafka", extra_env={"NPSLOOP_KAFKA_PORT": str(taken)})

        result = broker.run("start")

    assert result.returncode != 0
    assert f"NPSLOOP_KAFKA_PORT={taken} is not free" in result.stdout


def test_stop_when_never_started_is_harmless(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")

    broker.stop()

    assert broker.run("status").returncode == 1
