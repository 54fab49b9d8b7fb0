"""The runner finds runnable services without running them, and runs, watches and stops them."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from deploy.local.ports import free_port
from deploy.local.services import ServiceProcess, ServiceSpec, defines_main, why_not_runnable

FAKE_SERVICE_MAIN = """
import argparse
import http.server


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    print(f"fake service listening on {args.port}", flush=True)
    http.server.HTTPServer((args.host, args.port), Health).serve_forever()


if __name__ == "__main__":
    main()
"""


def write_package(root: Path, name: str, main_source: str | None) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    if main_source is not None:
        (package / "__main__.py").write_text(main_source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def main() -> None:\n    pass\n", True),
        ("async def main() -> None:\n    pass\n", True),
        ("from npsloop_x.cli import main\n", True),
        ("from npsloop_x.cli import run as main\n", True),
        ("def run() -> None:\n    pass\n", False),
        ("if True:\n    def main() -> None:\n        pass\n", False),
    ],
)
def test_defines_main_reads_only_top_level_definitions(source: str, expected: bool) -> None:
    assert defines_main(textwrap.dedent(source)) is expected


def test_why_not_runnable_names_each_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(tmp_path, "npsloop_nomain", None)
    write_package(tmp_path, "npsloop_mainless", "print('would run if imported')\n")
    write_package(tmp_path, "npsloop_runnable", FAKE_SERVICE_MAIN)
    monkeypatch.syspath_prepend(str(tmp_path))

    assert why_not_runnable("npsloop_absent") == "package npsloop_absent is not installed"
    assert why_not_runnable("npsloop_nomain") == "npsloop_nomain has no __main__ module yet"
    assert why_not_runnable("npsloop_mainless") == "npsloop_mainless.__main__ has no main()"
    assert why_not_runnable("npsloop_runnable") is None


@pytest.mark.timeout(60)
def test_service_process_runs_reports_health_logs_and_stops(tmp_path: Path) -> None:
    write_package(tmp_path, "npsloop_fakesvc", FAKE_SERVICE_MAIN)
    port = free_port()
    service = ServiceProcess(
        ServiceSpec("fakesvc", "npsloop_fakesvc", port), port, tmp_path / "log"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}

    service.start(env)
    try:
        assert service.wait_until_healthy(within_seconds=30)
        assert service.exit_code() is None
    finally:
        service.stop()

    assert service.exit_code() is not None
    assert not service.healthy()
    assert f"fake service listening on {port}" in (tmp_path / "log").read_text()


@pytest.mark.timeout(60)
def test_a_service_that_dies_is_not_reported_healthy(tmp_path: Path) -> None:
    write_package(tmp_path, "npsloop_crashing", "def main():\n    pass\n\nraise SystemExit(3)\n")
    port = free_port()
    service = ServiceProcess(
        ServiceSpec("crashing", "npsloop_crashing", port), port, tmp_path / "log"
    )

    service.start({**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        assert not service.wait_until_healthy(within_seconds=30)
    finally:
        service.stop()

    assert service.exit_code() == 3
