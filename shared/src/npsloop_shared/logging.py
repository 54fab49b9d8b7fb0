"""JSON logs on stderr. Never pass secrets, comments or respondent emails as log fields."""

from __future__ import annotations

import logging
import sys

from aiokafka.errors import KafkaError
from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_drop_terminal_colours)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt at ERROR with a traceback; keep it to warnings.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    coordinator_log = logging.getLogger("aiokafka.consumer.group_coordinator")
    if demote_retried_coordinator_errors not in coordinator_log.filters:
        coordinator_log.addFilter(demote_retried_coordinator_errors)


def demote_retried_coordinator_errors(record: logging.LogRecord) -> bool:
    """aiokafka logs "Group Coordinator Request failed" at ERROR even when it retries by itself,
    as it does on every fresh broker until the group coordinator has loaded. A retriable error
    becomes INFO; one it gives up on stays ERROR. Lasting trouble shows in readiness and lag."""
    if record.levelno == logging.ERROR and record.args and isinstance(record.args, tuple):
        error = record.args[0]
        if isinstance(error, KafkaError) and error.retriable:
            record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def _drop_terminal_colours(record: logging.LogRecord) -> bool:
    # uvicorn attaches an ANSI-coloured copy of its message, which JSON logs would carry as a field.
    record.__dict__.pop("color_message", None)
    return True
