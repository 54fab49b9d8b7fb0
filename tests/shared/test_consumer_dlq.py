"""What a dead-lettered record carries, and the retry arithmetic (no broker needed)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from npsloop_shared.kafka.consumer import Backoff, ConsumedRecord, RetryPolicy
from npsloop_shared.kafka.dlq import (
    MAX_ERROR_MESSAGE_CHARS,
    dead_letter_headers,
    dead_letter_topic,
    describe_error,
    error_class_name,
)


def a_record(headers: tuple[tuple[str, bytes], ...] = ()) -> ConsumedRecord:
    return ConsumedRecord(
        topic="npsloop.responses.v1",
        partition=3,
        offset=42,
        key=b"acct-1",
        value=b"{}",
        headers=headers,
        timestamp_ms=1_700_000_000_000,
    )


class Score(BaseModel):
    score: int
    email: str


def test_dead_letter_topic_appends_dlq() -> None:
    assert dead_letter_topic("npsloop.responses.v1") == "npsloop.responses.v1.dlq"


def test_headers_keep_the_original_ones_and_add_the_verdict() -> None:
    record = a_record((("ce_id", b"abc"), ("content-type", b"application/json")))
    headers = dead_letter_headers(record, RuntimeError("boom"), attempts=5)
    assert headers == [
        ("ce_id", b"abc"),
        ("content-type", b"application/json"),
        ("npsloop_error_class", b"builtins.RuntimeError"),
        ("npsloop_error_message", b"boom"),
        ("npsloop_attempts", b"5"),
        ("npsloop_original_topic", b"npsloop.responses.v1"),
        ("npsloop_original_partition", b"3"),
        ("npsloop_original_offset", b"42"),
    ]


def test_a_re_driven_record_failing_again_carries_only_the_new_verdict() -> None:
    earlier = dead_letter_headers(a_record((("ce_id", b"abc"),)), KeyError("x"), attempts=1)
    again = dead_letter_headers(a_record(tuple(earlier)), ValueError("y"), attempts=2)
    names = [name for name, _ in again]
    assert len(names) == len(set(names))
    assert dict(again)["npsloop_error_class"] == b"builtins.ValueError"
    assert dict(again)["npsloop_attempts"] == b"2"


@pytest.mark.parametrize(
    ("message", "leak"),
    [
        ("insert failed: Key (email)=(ana.silva@example.com.br) exists", "ana.silva@"),
        ("connect postgresql://npsloop:hunter2@db:5432/npsloop failed", "hunter2"),
        ("401 for Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGci"),
        ("bad signature with whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8"),
        ("slack said invalid_auth for xoxb-1234-5678-abcdefgh", "abcdefgh"),
        ("telegram 401 bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "AAHdqTcv"),
        ("request failed: ?token=s3cr3t&x=1", "s3cr3t"),
    ],
)
def test_error_messages_are_scrubbed_of_secrets_and_emails(message: str, leak: str) -> None:
    described = describe_error(RuntimeError(message))
    assert leak not in described
    assert described.split()[0] == message.split(maxsplit=1)[0], "the rest of the message survives"


def test_validation_errors_name_fields_but_never_quote_the_input() -> None:
    with pytest.raises(ValidationError) as caught:
        Score.model_validate({"score": "eleven", "email": 7})
    described = describe_error(caught.value)
    assert described == ("2 validation error(s) for Score: score: int_parsing; email: string_type")
    assert "eleven" not in described


def test_long_messages_are_truncated_and_whitespace_collapsed() -> None:
    described = describe_error(RuntimeError("line one\n\n  line two " + "x" * 2_000))
    assert described.startswith("line one line two xxx")
    assert len(described) == MAX_ERROR_MESSAGE_CHARS
    assert described.endswith("…")


def test_an_empty_message_falls_back_to_the_class_name() -> None:
    assert describe_error(TimeoutError()) == "TimeoutError"


def test_error_class_name_is_fully_qualified() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads(b"{not json")
    assert error_class_name(caught.value) == "json.decoder.JSONDecodeError"


def test_backoff_grows_exponentially_with_jitter_and_stays_capped() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1, "jittered"


def test_a_retry_policy_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


def test_record_header_returns_the_last_value_of_a_repeated_header() -> None:
    record = a_record((("ce_id", b"first"), ("ce_id", b"second")))
    assert record.header("ce_id") == b"second"
    assert record.header("absent") is None
