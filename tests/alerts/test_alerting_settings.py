"""How `NPSLOOP_ALERTS_FETCH_LINGER_MS` reaches the responses consumer."""

from __future__ import annotations

import pytest

from npsloop_alerts.alerting.settings import LINGERING_FETCH_MIN_BYTES, AlertingSettings
from npsloop_shared.kafka.consumer import ConsumerTuning


def test_by_default_the_broker_holds_a_fetch_for_40_ms_rather_than_until_a_size() -> None:
    tuning = AlertingSettings().consumer_tuning()

    assert tuning.fetch_max_wait_ms == 40
    assert tuning.fetch_min_bytes == LINGERING_FETCH_MIN_BYTES
    # Only the fetch changes; the group's timings stay the wrapper's.
    assert tuning.session_timeout_ms == ConsumerTuning().session_timeout_ms


def test_the_linger_is_configured_in_the_environment_and_0_answers_every_record_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NPSLOOP_ALERTS_FETCH_LINGER_MS", "15")
    assert AlertingSettings().consumer_tuning().fetch_max_wait_ms == 15

    monkeypatch.setenv("NPSLOOP_ALERTS_FETCH_LINGER_MS", "0")
    assert AlertingSettings().consumer_tuning() == ConsumerTuning()


def test_a_linger_beyond_half_a_second_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPSLOOP_ALERTS_FETCH_LINGER_MS", "5000")
    with pytest.raises(ValueError, match="alerts_fetch_linger_ms"):
        AlertingSettings()
