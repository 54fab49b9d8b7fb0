"""Pieces of ingest that need no broker: settings, the replay guard, readiness caching."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from npsloop_ingest.auth.replay import ReplayGuard
from npsloop_ingest.health.readiness import KafkaReadiness
from npsloop_ingest.settings import IngestSettings
from npsloop_shared.kafka.producer import KafkaProducer
from npsloop_shared.signing import generate_secret


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sources_are_parsed_from_json_and_secrets_stay_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = generate_secret()
    monkeypatch.setenv(
        "NPSLOOP_INGEST_SOURCES",
        json.dumps(
            {
                "api": {"type": "api", "token": "t" * 20, "signing_secret": secret},
                "typeform-eu": {"signing_secret": secret},
            }
        ),
    )
    monkeypatch.setenv("NPSLOOP_INGEST_ACK_TIMEOUT", "2.5")

    settings = IngestSettings()

    assert set(settings.ingest_sources) == {"api", "typeform-eu"}
    api = settings.ingest_sources["api"]
    assert api.token is not None
    assert api.token.get_secret_value() == "t" * 20
    assert settings.ingest_sources["typeform-eu"].token is None
    assert settings.ingest_ack_timeout == 2.5
    assert "t" * 20 not in repr(settings)
    assert secret not in repr(settings)


def test_defaults() -> None:
    settings = IngestSettings(ingest_sources={})

    assert settings.ingest_topic == "npsloop.responses.v1"
    assert settings.ingest_ack_timeout == 5.0
    assert settings.ingest_max_body_bytes == 1024 * 1024
    topic, dlq = settings.topic_specs()
    assert (topic.name, topic.partitions, topic.replication_factor) == (
        "npsloop.responses.v1",
        6,
        1,
    )
    assert topic.config == {"retention.ms": str(7 * 24 * 3600 * 1000)}
    assert dlq.name == "npsloop.responses.v1.dlq"
    assert dlq.config == topic.config


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({}, "a token, a signing_secret, or both"),
        ({"token": "short"}, "at least 16 characters"),
        ({"signing_secret": "not-whsec"}, "must start with 'whsec_'"),
        ({"signing_secret": "whsec_!!!"}, "must be base64"),
        ({"signing_secret": "whsec_c2hvcnQ="}, "at least 16 bytes"),
        ({"type": "typeform", "token": "t" * 20}, "Input should be 'api'"),
        ({"token": "t" * 20, "tokn": "typo"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_source_configuration_is_refused(source: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IngestSettings(ingest_sources={"api": source})


def test_source_ids_are_uri_safe() -> None:
    with pytest.raises(ValidationError):
        IngestSettings(ingest_sources={"bad id/with slash": {"token": "t" * 20}})


def test_replay_guard_remembers_for_twice_the_tolerance() -> None:
    clock = Clock()
    guard = ReplayGuard(tolerance_seconds=300, max_entries=10, clock=clock)

    guard.remember("api", "msg-1")
    clock.now += 599

    assert guard.already_accepted("api", "msg-1")
    assert not guard.already_accepted("other", "msg-1")
    clock.now += 2
    assert not guard.already_accepted("api", "msg-1")
    assert len(guard) == 0


def test_replay_guard_is_bounded_forgetting_the_oldest_first() -> None:
    guard = ReplayGuard(tolerance_seconds=300, max_entries=3, clock=Clock())

    for i in range(5):
        guard.remember("api", f"msg-{i}")

    assert len(guard) == 3
    assert [guard.already_accepted("api", f"msg-{i}") for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]


@pytest.mark.kafka
async def test_readiness_probes_kafka_and_caches_the_answer(kafka_bootstrap: str) -> None:
    clock = Clock()
    producer = KafkaProducer(kafka_bootstrap)
    readiness = KafkaReadiness(producer, cache_seconds=2.0, clock=clock)
    assert await readiness.is_ready() is False  # not started yet

    clock.now += 2
    await producer.start()
    assert await readiness.is_ready() is True

    await producer.stop()
    clock.now += 1.9
    assert await readiness.is_ready() is True  # still the cached answer
    clock.now += 0.1
    assert await readiness.is_ready() is False
