"""Python handles on the local control scripts ``kafka.sh`` and ``postgres.sh``.

The scripts are the one way the project starts its real Kafka and PostgreSQL; the local runner
and the test fixtures drive them through these handles. Contract with a script: ``start`` prints
``<VARIABLE>=<address>`` as its last line and exits 0, or exits non-zero with the reason (the
broker or server log tail) in its output, which :class:`InfrastructureError` carries.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEPLOY_LOCAL = Path(__file__).resolve().parent
REPO_ROOT = DEPLOY_LOCAL.parents[1]
KAFKA_SCRIPT = DEPLOY_LOCAL / "kafka.sh"
POSTGRES_SCRIPT = DEPLOY_LOCAL / "postgres.sh"
# A developer's NPSLOOP_*_PORT is meant for `make run`; servers for tests take free ports.
TEST_SERVER_ENV: Mapping[str, str] = {"NPSLOOP_KAFKA_PORT": "", "NPSLOOP_POSTGRES_PORT": ""}
# The first start may download Kafka from Maven Central; the script's own ready wait is 90 s.
SCRIPT_TIMEOUT_SECONDS = 600.0


class InfrastructureError(RuntimeError):
    """A control script failed; the message holds its complete output."""


def last_line_value(output: str, variable: str) -> str:
    """The value of the ``VARIABLE=value`` line that must end a script's output."""
    lines = [line for line in output.splitlines() if line.strip()]
    prefix = f"{variable}="
    if not lines or not lines[-1].startswith(prefix):
        raise InfrastructureError(f"expected a last line {prefix}<value>, got:\n{output}")
    return lines[-1].removeprefix(prefix)


def pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped by its parent) is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]  # the name in parentheses may hold spaces
    return state != "Z"


@dataclass
class ControlledServer:
    """One server instance: a control script bound to one data directory."""

    script: Path
    data_dir: Path
    data_dir_variable: str
    address_variable: str
    pid_file_name: str
    log_file_name: str
    extra_env: Mapping[str, str] = field(default_factory=dict)
    address: str | None = None

    @property
    def log_file(self) -> Path:
        return self.data_dir / self.log_file_name

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.extra_env, self.data_dir_variable: str(self.data_dir)}
        return subprocess.run(
            [str(self.script), command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=SCRIPT_TIMEOUT_SECONDS,
            check=False,
            # A Ctrl-C meant for the runner must not cut a start or stop half way.
            start_new_session=True,
        )

    def start(self) -> str:
        """Starts (or finds running) the server; returns its address and remembers it."""
        result = self.run("start")
        if result.returncode != 0:
            raise InfrastructureError(
                f"{self.script.name} start failed (exit {result.returncode}), data dir "
                f"{self.data_dir}:\n{result.stdout}"
            )
        self.address = last_line_value(result.stdout, self.address_variable)
        return self.address

    def stop(self) -> None:
        result = self.run("stop")
        if result.returncode != 0:
            raise InfrastructureError(f"{self.script.name} stop failed:\n{result.stdout}")

    def is_running(self) -> bool:
        return self.run("status").returncode == 0

    def process_alive(self) -> bool:
        """A cheap liveness check from the pid file, for supervising without spawning."""
        pid_file = self.data_dir / self.pid_file_name
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return pid_alive(pid)

    async def start_async(self) -> str:
        """``start`` off the event loop, so a test's clients keep running meanwhile."""
        return await asyncio.to_thread(self.start)

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)


class KafkaBroker(ControlledServer):
    """A single-node KRaft broker run by ``deploy/local/kafka.sh``."""

    def __init__(self, data_dir: Path, extra_env: Mapping[str, str] | None = None) -> None:
        super().__init__(
            script=KAFKA_SCRIPT,
            data_dir=data_dir,
            data_dir_variable="NPSLOOP_KAFKA_DATA_DIR",
            address_variable="NPSLOOP_KAFKA_BOOTSTRAP_SERVERS",
            pid_file_name="broker.pid",
            log_file_name="broker.log",
            extra_env=dict(extra_env or {}),
        )

    @property
    def bootstrap_servers(self) -> str:
        if self.address is None:
            raise InfrastructureError(f"the broker in {self.data_dir} was never started")
        return self.address


class PostgresServer(ControlledServer):
    """An embedded PostgreSQL server run by ``deploy/local/postgres.sh``."""

    def __init__(self, data_dir: Path, extra_env: Mapping[str, str] | None = None) -> None:
        super().__init__(
            script=POSTGRES_SCRIPT,
            data_dir=data_dir,
            data_dir_variable="NPSLOOP_POSTGRES_DATA_DIR",
            address_variable="NPSLOOP_DATABASE_URL",
            pid_file_name="postmaster.pid",
            log_file_name="server.log",
            extra_env=dict(extra_env or {}),
        )

    @property
    def database_url(self) -> str:
        if self.address is None:
            raise InfrastructureError(f"the server in {self.data_dir} was never started")
        return self.address


KafkaBrokerFactory = Callable[[], KafkaBroker]
"""The ``kafka_broker_factory`` fixture: each call starts one more separate broker."""
