"""Log hygiene: what aiokafka reports at ERROR while it retries by itself is not an error."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

from npsloop_shared.logging import configure_logging

COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"


def _configure_into(stream: io.StringIO) -> None:
    configure_logging("INFO", "json")
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)  # pytest swaps sys.stderr between phases; write here instead


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    _configure_into(stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def _logged(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_coordinator_lookup_that_aiokafka_retries_is_logged_as_info(
    json_lines: io.StringIO,
) -> None:
    # The exact call aiokafka makes while a fresh broker loads its group coordinator.
    logging.getLogger(COORDINATOR_LOGGER).error(
        "Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError()
    )

    [line] = _logged(json_lines)
    assert line["level"] == "INFO"
    assert line["logger"] == COORDINATOR_LOGGER
    assert "GroupCoordinatorNotAvailableError" in str(line["message"])


def test_a_coordinator_error_aiokafka_gives_up_on_stays_an_error(json_lines: io.StringIO) -> None:
    logging.getLogger(COORDINATOR_LOGGER).error(
        "Group Coordinator Request failed: %s", GroupAuthorizationFailedError()
    )

    [line] = _logged(json_lines)
    assert line["level"] == "ERROR"


def test_configuring_twice_demotes_once_and_keeps_other_errors(json_lines: io.StringIO) -> None:
    _configure_into(json_lines)
    coordinator = logging.getLogger(COORDINATOR_LOGGER)
    assert (
        sum(1 for f in coordinator.filters if getattr(f, "__name__", "").startswith("demote")) == 1
    )

    coordinator.error("heartbeat session expired")

    [line] = _logged(json_lines)
    assert line["level"] == "ERROR"
    assert line["message"] == "heartbeat session expired"
