"""Fixtures on the real infrastructure: Apache Kafka and PostgreSQL started by the project's own
scripts (``deploy/local/kafka.sh``, ``deploy/local/postgres.sh``).

Servers start lazily (a session fixture runs only when a test asks for it), so unit tests stay
fast. A server that cannot start fails the tests that need it with the script's output; nothing
is ever skipped. While developing, reuse running servers instead of starting new ones:
``NPSLOOP_TEST_KAFKA_BOOTSTRAP_SERVERS`` and ``NPSLOOP_TEST_DATABASE_URL``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.infra import TEST_SERVER_ENV, KafkaBroker, KafkaBrokerFactory, PostgresServer


def new_kafka_broker(data_dir: Path) -> KafkaBroker:
    return KafkaBroker(data_dir, extra_env=TEST_SERVER_ENV)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real single-node Kafka broker shared by the whole session."""
    reused = os.environ.get("NPSLOOP_TEST_KAFKA_BOOTSTRAP_SERVERS")
    if reused:
        yield reused
        return
    broker = new_kafka_broker(tmp_path_factory.mktemp("kafka"))
    yield broker.start()
    broker.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``postgresql+asyncpg://`` URL of a real PostgreSQL server shared by the session."""
    reused = os.environ.get("NPSLOOP_TEST_DATABASE_URL")
    if reused:
        yield reused
        return
    server = PostgresServer(tmp_path_factory.mktemp("postgres"), extra_env=TEST_SERVER_ENV)
    yield server.start()
    server.stop()


@pytest.fixture
def unique_name() -> str:
    """A fresh suffix for topic names and consumer group ids, so tests never share state."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kafka_broker_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KafkaBrokerFactory]:
    """Starts extra, separate brokers a test may stop and start again (failure tests).

    ``factory()`` returns a started :class:`KafkaBroker`: ``.bootstrap_servers``, ``.stop()``,
    ``.start()`` (same data dir and, when still free, the same port), and ``*_async`` variants
    that keep the event loop running. Every broker is stopped at teardown.
    """
    with contextlib.ExitStack() as teardown:  # stops every broker even if one stop fails

        def start_broker() -> KafkaBroker:
            broker = new_kafka_broker(tmp_path_factory.mktemp("kafka-extra"))
            teardown.callback(broker.stop)
            broker.start()
            return broker

        yield start_broker
