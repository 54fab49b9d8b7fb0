"""CloudEvents 1.0 Kafka binary mode: attributes travel as `ce_*` headers, the value is the data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

KafkaHeaders = list[tuple[str, bytes]]

SPEC_VERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class CloudEventAttributes:
    id: str
    type: str
    source: str
    time: datetime
    subject: str | None = None

    def to_headers(self) -> KafkaHeaders:
        headers: KafkaHeaders = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()),
            ("ce_time", self.time.isoformat().encode()),
            ("content-type", JSON_CONTENT_TYPE.encode()),
        ]
        if self.subject is not None:
            headers.append(("ce_subject", self.subject.encode()))
        return headers

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]]) -> CloudEventAttributes:
        """Parse `ce_*` headers; raises `ValueError` naming what is missing."""
        values = {key: value.decode() for key, value in headers if key.startswith("ce_")}
        missing = [k for k in ("ce_id", "ce_type", "ce_source", "ce_time") if k not in values]
        if missing:
            raise ValueError(f"missing CloudEvents headers: {', '.join(missing)}")
        return cls(
            id=values["ce_id"],
            type=values["ce_type"],
            source=values["ce_source"],
            time=datetime.fromisoformat(values["ce_time"]),
            subject=values.get("ce_subject"),
        )


def header_value(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode()
    return None
