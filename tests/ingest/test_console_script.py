"""`npsloop-ingest` itself: a real uvicorn server on a real socket, JSON logs, clean shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.local.ports import free_port
from tests.ingest.conftest import BEARER, TOKEN, read_topic, sources, valid_response

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

SCRIPT = Path(sys.executable).parent / "npsloop-ingest"


def ingest_env(bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPSLOOP_")}
    env.update(
        NPSLOOP_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NPSLOOP_INGEST_SOURCES=sources(),
        NPSLOOP_INGEST_TOPIC=topic,
        NPSLOOP_INGEST_TOPIC_PARTITIONS="2",
        NPSLOOP_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@pytest.fixture
def server(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The console script serving on a free port; yields its base URL and its log file."""
    port = free_port()
    log_file = tmp_path / "ingest.log"
    topic = f"npsloop.responses.v1.{unique_name}"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [str(SCRIPT), "--host", "127.0.0.1", "--port", str(port)],
            env=ingest_env(kafka_bootstrap, topic),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, process, log_file)
        yield base_url, log_file
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM).
    assert exit_code in (0, -signal.SIGTERM), log_file.read_text()
    assert "Application shutdown complete." in log_file.read_text()


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"npsloop-ingest exited:\n{log_file.read_text()}"
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"npsloop-ingest never became ready:\n{log_file.read_text()}")


async def test_real_server_accepts_and_produces(
    server: tuple[str, Path], kafka_bootstrap: str, unique_name: str
) -> None:
    base_url, log_file = server
    async with httpx.AsyncClient(base_url=base_url) as client:
        single = await client.post(
            "/v1/responses", json=valid_response(response_id="over-tcp"), headers=BEARER
        )
        concurrent = await asyncio.gather(
            *(
                client.post(
                    "/v1/responses", json=valid_response(response_id=f"c-{i}"), headers=BEARER
                )
                for i in range(20)
            )
        )
        invalid = await client.post("/v1/responses", json={"score": 3}, headers=BEARER)
        health = await client.get("/healthz")
        metrics = await client.get("/metrics")
        docs = await client.get("/openapi.json")

    assert single.status_code == 202
    assert single.headers["content-type"] == "application/json"
    assert "server" not in single.headers
    assert {answer.status_code for answer in concurrent} == {202}
    assert invalid.status_code == 422
    assert health.status_code == 200
    assert 'npsloop_ingest_requests_total{status="202"} 21.0' in metrics.text
    assert "/v1/responses" in docs.json()["paths"]
    landed = await read_topic(kafka_bootstrap, f"npsloop.responses.v1.{unique_name}", 2, 21)
    assert len(landed) == 21
    assert {r.value["response_id"] for r in landed} == {"over-tcp", *(f"c-{i}" for i in range(20))}
    log_lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    assert any(line["message"] == "kafka connected" for line in log_lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in log_lines)
    assert TOKEN not in log_file.read_text()


def test_help_explains_options_and_configuration() -> None:
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=True)

    for text in ("--host", "--port", "--workers", "NPSLOOP_INGEST_SOURCES", "ACK_TIMEOUT"):
        assert text in result.stdout


def test_invalid_configuration_exits_2_without_echoing_secrets() -> None:
    secret_token = "short"  # too short, and must not be echoed
    env = ingest_env(
        "127.0.0.1:1",
        "t",
        NPSLOOP_INGEST_SOURCES=json.dumps({"api": {"token": secret_token}}),
    )

    result = subprocess.run(
        [str(SCRIPT), "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert "at least 16 characters" in result.stderr
    assert f'"{secret_token}"' not in result.stderr
    assert f"'{secret_token}'" not in result.stderr
