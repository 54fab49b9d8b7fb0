"""`make run` (deploy.local.runner): ports, dev credentials, the banner, and a whole real run."""

from __future__ import annotations

import email
import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from deploy.local.banner import Banner, SkippedService, sample_body
from deploy.local.infra import REPO_ROOT, KafkaBroker, PostgresServer
from deploy.local.ports import free_port
from deploy.local.runner import DevSecrets, RunnerError, choose_port, ingest_token
from deploy.local.services import SERVICES

BANNER_READY = "npsloop is running. Ctrl-C stops everything."


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def test_requested_port_is_used_when_free(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = free_port()
    monkeypatch.setenv("NPSLOOP_TEST_SERVICE_PORT", str(wanted))

    assert choose_port("NPSLOOP_TEST_SERVICE_PORT", default=1) == wanted


def test_requested_port_that_is_taken_fails(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    monkeypatch.setenv("NPSLOOP_TEST_SERVICE_PORT", str(taken_port))

    with pytest.raises(RunnerError, match=f"NPSLOOP_TEST_SERVICE_PORT={taken_port}"):
        choose_port("NPSLOOP_TEST_SERVICE_PORT", default=1)


def test_default_port_that_is_taken_falls_back_to_a_free_one(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    monkeypatch.delenv("NPSLOOP_TEST_SERVICE_PORT", raising=False)

    chosen = choose_port("NPSLOOP_TEST_SERVICE_PORT", default=taken_port)

    assert chosen != taken_port
    assert chosen > 0


def test_dev_secrets_are_created_once_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "dev-secrets.json"

    first = DevSecrets.load_or_create(path)
    second = DevSecrets.load_or_create(path)

    assert first == second
    assert first.ingest_token != first.admin_token
    assert len(first.ingest_token) >= 32
    assert path.stat().st_mode & 0o777 == 0o600


def test_ingest_token_comes_from_the_first_source_with_one() -> None:
    sources = {"signed": {"type": "api", "signing_secret": "whsec_x"}, "demo": {"token": "abc"}}

    assert ingest_token({"NPSLOOP_INGEST_SOURCES": json.dumps(sources)}) == "abc"
    assert ingest_token({"NPSLOOP_INGEST_SOURCES": "not json"}) is None
    assert ingest_token({"NPSLOOP_INGEST_SOURCES": "[]"}) is None


def sample_banner(services: list[tuple[str, str, Path, bool]]) -> Banner:
    return Banner(
        services=services,
        skipped=[SkippedService("digest", "npsloop_digest has no __main__ module yet")],
        kafka_bootstrap="127.0.0.1:9092",
        kafka_log=Path("/data/kafka/broker.log"),
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/npsloop",
        postgres_log=Path("/data/postgres/server.log"),
        smtp_url="smtp://127.0.0.1:1025",
        mail_dir=Path("/data/mail"),
        data_root=Path("/data"),
        ingest_token="tok-123",
        admin_token="adm-456",
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_banner_curl_posts_a_valid_detractor_response() -> None:
    banner = sample_banner([("ingest", "http://127.0.0.1:8000", Path("/l/ingest.log"), True)])

    text = banner.render()

    curl = text[text.index("curl ") :].split("\n=")[0].replace("\\\n", " ")
    words = shlex.split(curl)
    assert words[words.index("-X") + 1 : words.index("-X") + 3] == [
        "POST",
        "http://127.0.0.1:8000/v1/responses",
    ]
    assert "Authorization: Bearer tok-123" in words
    body = json.loads(words[words.index("-d") + 1])
    assert body["kind"] == "transactional"
    assert body["touchpoint"] == "delivery"
    assert body["score"] == 3
    assert body["account_id"]
    assert body["comment"]
    assert body["response_id"].startswith("demo-")
    assert datetime.fromisoformat(body["submitted_at"]).tzinfo is not None


def test_banner_points_at_docs_health_logs_mail_and_skipped_services() -> None:
    banner = sample_banner([("ingest", "http://127.0.0.1:8000", Path("/l/ingest.log"), True)])

    text = banner.render()

    for expected in [
        "http://127.0.0.1:8000/docs",
        "http://127.0.0.1:8000/healthz",
        "/l/ingest.log",
        "/data/mail/*.eml",
        "/data/kafka/broker.log",
        "digest   not started: npsloop_digest has no __main__ module yet",
        "Admin token adm-456",
    ]:
        assert expected in text


def test_banner_without_ingest_has_no_curl() -> None:
    assert "curl" not in sample_banner([]).render()


class LineReader:
    """Reads a process's output on a thread so the test can wait with a deadline."""

    def __init__(self, stdout: IO[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stdout,), daemon=True).start()

    def _pump(self, stdout: IO[str]) -> None:
        for line in iter(stdout.readline, ""):
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str | None, within_seconds: float) -> bool:
        """True once a line containing ``text`` arrived (``None``: the end of the output)."""
        while True:
            try:
                line = self.lines.get(timeout=within_seconds)
            except queue.Empty:
                return False
            if line is None:
                return text is None
            self.seen.append(line)
            if text is not None and text in line:
                return True

    def text_until_quiet(self, within_seconds: float) -> str:
        self.wait_for(None, within_seconds)
        return "".join(self.seen)


@pytest.mark.kafka
@pytest.mark.postgres
@pytest.mark.timeout(400)
def test_make_run_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """The whole user path: start, paste the banner's sample response, find its alert in the
    mail sink, Ctrl-C, and nothing is left running."""
    smtp_port = free_port()
    env = {
        **os.environ,
        "NPSLOOP_RUN_DATA_DIR": str(tmp_path),
        "NPSLOOP_SMTP_PORT": str(smtp_port),
        "NPSLOOP_KAFKA_PORT": "",
        "NPSLOOP_POSTGRES_PORT": "",
        **{spec.port_variable: str(free_port()) for spec in SERVICES},
    }
    runner = subprocess.Popen(
        [sys.executable, "-m", "deploy.local.runner"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert runner.stdout is not None
    output = LineReader(runner.stdout)
    try:
        assert output.wait_for(BANNER_READY, within_seconds=300), "".join(output.seen)
        banner = output.text_until_quiet(within_seconds=2)
        ingest_url = f"http://127.0.0.1:{env['NPSLOOP_INGEST_PORT']}"
        token = DevSecrets.load_or_create(tmp_path / "dev-secrets.json").ingest_token
        posted = post_sample_response(ingest_url, token)
        alert_mail = wait_for_mail(tmp_path / "mail", within_seconds=60)
    finally:
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=120)
    shutdown = output.text_until_quiet(within_seconds=5)

    assert runner.returncode == 0, shutdown
    assert "npsloop stopped." in shutdown
    assert "NOT answering" not in banner
    for spec in SERVICES:  # each service either started and healthy, or skipped with a reason
        started, skipped = f"{spec.name:<8} http://127.0.0.1:", f"{spec.name:<8} not started: "
        assert started in banner or skipped in banner
    assert posted["accepted"] == 1
    assert "Directory   account acme-corp → Demo Owner <owner@acme.example>" in banner
    assert alert_mail["To"] == "Demo Owner <owner@acme.example>"
    assert "Acme Corp" in str(alert_mail["Subject"])
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1
    assert not KafkaBroker(tmp_path / "kafka").is_running()
    assert not PostgresServer(tmp_path / "postgres").is_running()


def post_sample_response(ingest_url: str, token: str) -> dict[str, Any]:
    """POST the banner's sample body, as its curl does."""
    answer = httpx.post(
        f"{ingest_url}/v1/responses",
        json=sample_body(datetime.now(UTC)),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_for_mail(mail_dir: Path, within_seconds: float) -> EmailMessage:
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        found = sorted(mail_dir.glob("*.eml"))
        if found:
            message = email.message_from_bytes(found[0].read_bytes(), policy=default_policy)
            assert isinstance(message, EmailMessage)
            return message
        time.sleep(0.2)
    raise AssertionError(f"no mail in {mail_dir} within {within_seconds:.0f} s")
