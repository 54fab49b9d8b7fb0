"""``make run``: the whole of npsloop on this machine, on real Kafka and PostgreSQL.

Starts, in order: PostgreSQL, Kafka, an SMTP sink keeping mail as ``.eml`` files, the database
migrations of the services that have them, then every service that can run. Prints where to
look, then watches: a service or server that dies is reported. Ctrl-C (or SIGTERM) stops
everything in reverse order, the JVM and PostgreSQL included.

Everything lives under ``NPSLOOP_RUN_DATA_DIR`` (default ``.data``). Ports: ingest 8000,
alerts 8001, digest 8002, SMTP 1025, each overridable (``NPSLOOP_<SERVICE>_PORT``,
``NPSLOOP_SMTP_PORT``); a default that is taken falls back to a free port, a requested one fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from aiosmtpd.controller import Controller

from deploy.local.banner import Banner, SkippedService
from deploy.local.demo_directory import DemoDirectoryError, ensure_demo_directory
from deploy.local.infra import (
    REPO_ROOT,
    ControlledServer,
    InfrastructureError,
    KafkaBroker,
    PostgresServer,
)
from deploy.local.mail_sink import start_mail_sink
from deploy.local.ports import free_port, port_is_free
from deploy.local.services import SERVICES, ServiceProcess, ServiceSpec, say, why_not_runnable

DEFAULT_SMTP_PORT = 1025
HEALTH_WAIT_SECONDS = 60.0
SUPERVISE_INTERVAL_SECONDS = 1.0


class RunnerError(Exception):
    """The stack could not be brought up; the message says what and where to look."""


@dataclass(frozen=True)
class Layout:
    data_root: Path

    @classmethod
    def from_environment(cls) -> Layout:
        root = Path(os.environ.get("NPSLOOP_RUN_DATA_DIR", REPO_ROOT / ".data"))
        return cls(root.resolve())

    @property
    def mail_dir(self) -> Path:
        return self.data_root / "mail"

    @property
    def log_dir(self) -> Path:
        return self.data_root / "logs"

    @property
    def secrets_file(self) -> Path:
        return self.data_root / "dev-secrets.json"


@dataclass(frozen=True)
class DevSecrets:
    """Local-only credentials, kept across runs so pasted commands keep working."""

    ingest_token: str
    admin_token: str

    @classmethod
    def load_or_create(cls, path: Path) -> DevSecrets:
        if path.exists():
            stored = json.loads(path.read_text())
            return cls(ingest_token=stored["ingest_token"], admin_token=stored["admin_token"])
        created = cls(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(created.__dict__, indent=2) + "\n")
        path.chmod(0o600)
        return created


def choose_port(variable: str, default: int) -> int:
    """The requested port (which must be free), else the default, else any free port."""
    requested = os.environ.get(variable)
    if requested:
        if not port_is_free(int(requested)):
            raise RunnerError(f"{variable}={requested} is already in use")
        return int(requested)
    if port_is_free(default):
        return default
    chosen = free_port()
    say(f"port {default} is taken; using {chosen} (set {variable} to choose)")
    return chosen


def ingest_token(env: dict[str, str]) -> str | None:
    """The bearer token of the first ingest source that has one, for the sample curl."""
    with contextlib.suppress(ValueError, AttributeError):
        for source in json.loads(env["NPSLOOP_INGEST_SOURCES"]).values():
            if isinstance(source, dict) and isinstance(source.get("token"), str):
                return str(source["token"])
    return None


def service_environment(
    kafka: KafkaBroker, postgres: PostgresServer, smtp_port: int, dev: DevSecrets
) -> dict[str, str]:
    env = dict(os.environ)
    env["NPSLOOP_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    env["NPSLOOP_DATABASE_URL"] = postgres.database_url
    env["NPSLOOP_SMTP_URL"] = f"smtp://127.0.0.1:{smtp_port}"
    demo_source = {"demo": {"type": "api", "token": dev.ingest_token}}
    env.setdefault("NPSLOOP_INGEST_SOURCES", json.dumps(demo_source))
    env.setdefault("NPSLOOP_ADMIN_TOKEN", dev.admin_token)
    env.setdefault("NPSLOOP_LOG_FORMAT", "text")  # people read this terminal; JSON is for machines
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the terminal as they happen
    return env


def start_server(stack: contextlib.ExitStack, server: ControlledServer, label: str) -> str:
    say(f"starting {label} (data {server.data_dir}) ...")
    # Registered first: a start cut short by Ctrl-C may already have a process to stop.
    stack.callback(stop_quietly, server, label)
    return server.start()


def stop_quietly(server: ControlledServer, label: str) -> None:
    say(f"stopping {label} ...")
    try:
        server.stop()
    except (InfrastructureError, OSError, subprocess.SubprocessError) as error:
        # Keep stopping the rest, and say what may be left behind.
        say(f"could not stop {label}: {error}")


def stop_mail_sink(mail_sink: Controller) -> None:
    say("stopping the mail sink ...")
    mail_sink.stop()


def migrate(spec: ServiceSpec, env: dict[str, str], log_dir: Path) -> None:
    if not spec.alembic_ini.exists():
        return
    say(f"applying {spec.name} migrations (alembic upgrade head) ...")
    command = [sys.executable, "-m", "alembic", "-c", str(spec.alembic_ini), "upgrade", "head"]
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    log_file = log_dir / f"{spec.name}-migrations.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RunnerError(f"{spec.name} migrations failed:\n{result.stdout}{result.stderr}")


def start_services(
    stack: contextlib.ExitStack, env: dict[str, str], layout: Layout
) -> tuple[list[ServiceProcess], list[SkippedService]]:
    started: list[ServiceProcess] = []
    skipped: list[SkippedService] = []
    for spec in SERVICES:
        reason = why_not_runnable(spec.package)
        if reason is not None:
            skipped.append(SkippedService(spec.name, reason))
            continue
        port = choose_port(spec.port_variable, spec.default_port)
        service = ServiceProcess(spec, port, layout.log_dir / f"{spec.name}.log")
        say(f"starting {spec.name} on {service.base_url} ...")
        stack.callback(stop_service, service)
        service.start(env)
        started.append(service)
    return started, skipped


def stop_service(service: ServiceProcess) -> None:
    say(f"stopping {service.spec.name} ...")
    service.stop()


def wait_for_health(services: list[ServiceProcess]) -> dict[str, bool]:
    return {s.spec.name: s.wait_until_healthy(HEALTH_WAIT_SECONDS) for s in services}


def supervise(services: list[ServiceProcess], servers: dict[str, ControlledServer]) -> None:
    """Reports (once) each service or server that dies; returns only by KeyboardInterrupt."""
    reported: set[str] = set()
    while True:
        for service in services:
            code = service.exit_code()
            if code is not None and service.spec.name not in reported:
                reported.add(service.spec.name)
                say(f"!! {service.spec.name} exited with code {code}; see {service.log_file}")
        for label, server in servers.items():
            if label not in reported and not server.process_alive():
                reported.add(label)
                say(f"!! {label} is no longer running; see {server.log_file}")
        time.sleep(SUPERVISE_INTERVAL_SECONDS)


def seed_demo_directory(
    services: list[ServiceProcess], health: dict[str, bool], admin_token: str
) -> str | None:
    alerts = next((s for s in services if s.spec.name == "alerts" and health[s.spec.name]), None)
    if alerts is None:
        return None
    try:
        return ensure_demo_directory(alerts.base_url, admin_token)
    except DemoDirectoryError as exc:
        say(f"!! {exc}")
        return None


def bring_up_and_watch(stack: contextlib.ExitStack, layout: Layout) -> None:
    for folder in (layout.data_root, layout.mail_dir, layout.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    postgres = PostgresServer(layout.data_root / "postgres")
    start_server(stack, postgres, "PostgreSQL")
    kafka = KafkaBroker(layout.data_root / "kafka")
    start_server(stack, kafka, "Kafka")
    smtp_port = choose_port("NPSLOOP_SMTP_PORT", DEFAULT_SMTP_PORT)
    mail_sink = start_mail_sink(layout.mail_dir, smtp_port)
    stack.callback(stop_mail_sink, mail_sink)
    env = service_environment(
        kafka, postgres, smtp_port, DevSecrets.load_or_create(layout.secrets_file)
    )
    for spec in SERVICES:
        migrate(spec, env, layout.log_dir)
    services, skipped = start_services(stack, env, layout)
    health = wait_for_health(services)
    demo_directory = seed_demo_directory(services, health, env["NPSLOOP_ADMIN_TOKEN"])
    banner = Banner(
        services=[(s.spec.name, s.base_url, s.log_file, health[s.spec.name]) for s in services],
        skipped=skipped,
        kafka_bootstrap=kafka.bootstrap_servers,
        kafka_log=kafka.log_file,
        database_url=postgres.database_url,
        postgres_log=postgres.log_file,
        smtp_url=env["NPSLOOP_SMTP_URL"],
        mail_dir=layout.mail_dir,
        data_root=layout.data_root,
        ingest_token=ingest_token(env),
        admin_token=env["NPSLOOP_ADMIN_TOKEN"],
        demo_directory=demo_directory,
    )
    say(banner.render())
    supervise(services, {"Kafka": kafka, "PostgreSQL": postgres})


@contextlib.contextmanager
def interrupts_on_termination() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP all end the run through the same orderly shutdown.

    SIGINT is set explicitly: a process started in the background by a non-interactive shell
    inherits it ignored, and Python then never raises KeyboardInterrupt.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    stopping_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in stopping_signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ignore_interrupts() -> None:
    """While stopping, a second Ctrl-C must not strand a JVM or a PostgreSQL."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def main() -> int:
    layout = Layout.from_environment()
    exit_code = 0
    with interrupts_on_termination(), contextlib.ExitStack() as stack:
        try:
            bring_up_and_watch(stack, layout)
        except KeyboardInterrupt:
            say("\nstopping npsloop ...")
        except (RunnerError, InfrastructureError, OSError, subprocess.SubprocessError) as error:
            say(f"npsloop could not start: {error}")
            exit_code = 1
        finally:
            ignore_interrupts()
    say("npsloop stopped.")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
