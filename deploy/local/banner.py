"""What ``make run`` prints once everything is up: where to look and what to paste."""

from __future__ import annotations

import json
import shlex
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

NO_SOURCE_HINT = "<token of a source in NPSLOOP_INGEST_SOURCES>"


SAMPLE_ACCOUNT_ID = "acme-corp"  # the sample curl's account (seeded by demo_directory.py)


@dataclass(frozen=True)
class SkippedService:
    name: str
    reason: str


@dataclass(frozen=True)
class Banner:
    # (name, base URL, log file, answered /healthz)
    services: list[tuple[str, str, Path, bool]]
    skipped: list[SkippedService]
    kafka_bootstrap: str
    kafka_log: Path
    database_url: str
    postgres_log: Path
    smtp_url: str
    mail_dir: Path
    data_root: Path
    ingest_token: str | None
    admin_token: str
    demo_directory: str | None = None  # what `make run` seeded, if anything
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def render(self) -> str:
        lines = ["", "=" * 78, "npsloop is running. Ctrl-C stops everything.", ""]
        lines += [*self.service_lines(), "", *self.infrastructure_lines()]
        ingest = next((url for name, url, _, _ in self.services if name == "ingest"), None)
        if ingest is not None:
            lines += ["", "Post a sample detractor response:", sample_curl(ingest, self)]
        lines += ["=" * 78, ""]
        return "\n".join(lines)

    def service_lines(self) -> list[str]:
        lines = []
        for name, url, log_file, healthy in self.services:
            state = "ready" if healthy else "NOT answering /healthz yet"
            lines.append(f"  {name:<8} {url}  ({state})")
            lines.append(f"  {'':<8} docs {url}/docs   health {url}/healthz   ready {url}/readyz")
            lines.append(f"  {'':<8} log  {log_file}")
        for skipped in self.skipped:
            lines.append(f"  {skipped.name:<8} not started: {skipped.reason}")
        return lines

    def infrastructure_lines(self) -> list[str]:
        return [
            f"  Kafka       {self.kafka_bootstrap}   (log {self.kafka_log})",
            f"  PostgreSQL  {self.database_url}   (log {self.postgres_log})",
            f"  Mail        {self.smtp_url}; every message lands in {self.mail_dir}/*.eml",
            f"  Data        {self.data_root}   (dev tokens in {self.data_root}/dev-secrets.json)",
            f"  Admin token {self.admin_token}",
            *([f"  Directory   {self.demo_directory}"] if self.demo_directory else []),
        ]


def sample_body(now: datetime) -> dict[str, object]:
    return {
        "response_id": f"demo-{uuid.uuid4().hex[:8]}",
        "kind": "transactional",
        "touchpoint": "delivery",
        "account_id": SAMPLE_ACCOUNT_ID,
        "score": 3,
        "comment": "The parcel arrived two days late and the box was damaged.",
        "submitted_at": now.isoformat(timespec="seconds"),
    }


def sample_curl(ingest_url: str, banner: Banner) -> str:
    token = banner.ingest_token or NO_SOURCE_HINT
    return " \\\n    ".join(
        [
            f"  curl -sS -i -X POST {ingest_url}/v1/responses",
            "-H " + shlex.quote(f"Authorization: Bearer {token}"),
            "-H 'Content-Type: application/json'",
            "-d " + shlex.quote(json.dumps(sample_body(banner.now))),
        ]
    )
