"""The npsloop services as local subprocesses: which exist, how to run, watch and stop them."""

from __future__ import annotations

import ast
import contextlib
import http.client
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from deploy.local.infra import REPO_ROOT

STOP_GRACE_SECONDS = 15.0
_terminal_lock = threading.Lock()


def say(line: str) -> None:
    """One whole line on the terminal, never interleaved with a service's log line."""
    with _terminal_lock:
        sys.stdout.write(f"{line}\n")
        sys.stdout.flush()


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    package: str
    default_port: int

    @property
    def port_variable(self) -> str:
        return f"NPSLOOP_{self.name.upper()}_PORT"

    @property
    def alembic_ini(self) -> Path:
        return REPO_ROOT / "services" / self.name / "alembic.ini"


SERVICES = (
    ServiceSpec("ingest", "npsloop_ingest", 8000),
    ServiceSpec("alerts", "npsloop_alerts", 8001),
    ServiceSpec("digest", "npsloop_digest", 8002),
)


def defines_main(source: str) -> bool:
    """True when a module defines or imports a top-level ``main`` (read, never executed)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main":
            return True
        if isinstance(node, ast.ImportFrom) and any(
            (alias.asname or alias.name) == "main" for alias in node.names
        ):
            return True
    return False


def why_not_runnable(package: str) -> str | None:
    """None when ``python -m <package>`` runs a ``main``; otherwise the reason it cannot."""
    try:
        spec = importlib.util.find_spec(f"{package}.__main__")
    except ModuleNotFoundError:
        return f"package {package} is not installed"
    if spec is None or spec.origin is None:
        return f"{package} has no __main__ module yet"
    if not defines_main(Path(spec.origin).read_text()):
        return f"{package}.__main__ has no main()"
    return None


@dataclass
class ServiceProcess:
    """One running service; its output goes to its log file and to the terminal."""

    spec: ServiceSpec
    port: int
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", self.spec.package, "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C reaches only the runner, which stops services in order.
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self._pump = threading.Thread(
            target=copy_output, args=(self.process.stdout, self.log_file, self.spec.name)
        )
        self._pump.start()

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def healthy(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def wait_until_healthy(self, within_seconds: float) -> bool:
        deadline = time.monotonic() + within_seconds
        while time.monotonic() < deadline and self.exit_code() is None:
            if self.healthy():
                return True
            time.sleep(0.3)
        return False

    def stop(self) -> None:
        """TERM to the service's process group, KILL after a grace period, then wait."""
        if self.process is None:
            return
        if self.process.poll() is None:
            signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                say(f"{self.spec.name} ignored TERM for {STOP_GRACE_SECONDS:.0f}s, killing it")
                signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._pump is not None:
            self._pump.join()


def signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it already exited
        os.killpg(pid, signum)


def copy_output(stream: IO[bytes], log_file: Path, name: str) -> None:
    """Runs on its own thread until the service closes its output."""
    prefix = f"{name:>7} | "
    with log_file.open("ab") as log:
        for raw_line in iter(stream.readline, b""):
            log.write(raw_line)
            log.flush()
            say(prefix + raw_line.decode(errors="replace").rstrip("\n"))
