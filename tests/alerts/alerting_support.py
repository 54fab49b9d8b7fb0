"""Helpers for the alerting, delivery and end-to-end tests: directory rows, responses, a mail sink.

The SMTP sink is a real aiosmtpd server on a local port; every message it accepts is kept
(parsed) with its arrival time, like the fake Slack and Telegram servers keep their requests.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from deploy.local.ports import free_port
from npsloop_alerts.alerting.repository import AlertRepository
from npsloop_shared.contracts import ResponseReceived, bucket_for
from npsloop_shared.db import session_scope
from tests.fakes.slack_api import DEFAULT_BOT_TOKEN, FakeSlack
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram


@dataclass(frozen=True, slots=True)
class Mail:
    message: EmailMessage
    recipients: tuple[str, ...]
    received_at: float

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None
        content = part.get_content()
        assert isinstance(content, str)
        return content


def parsed_mail(envelope: Envelope) -> EmailMessage:
    """The message aiosmtpd received, as a mail client reads it."""
    content = envelope.content
    assert isinstance(content, bytes)
    parsed = email.message_from_bytes(content, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


@dataclass
class ScriptedRecipients:
    """aiosmtpd RCPT hook: `refuse[address]` is the reply for that address, others get 250."""

    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"


@dataclass
class MailSink(ScriptedRecipients):
    """aiosmtpd handler keeping every message; `refuse[address]` scripts a RCPT reply."""

    mails: list[Mail] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.mails.append(Mail(parsed_mail(envelope), tuple(envelope.rcpt_tos), time.time()))
        return "250 Message accepted for delivery"

    async def start(self) -> MailSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="mx.test"), "127.0.0.1", 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def to(self, address: str) -> list[Mail]:
        return [mail for mail in self.mails if address in mail.recipients]

    async def wait_for(
        self, count: int, address: str | None = None, within: float = 15
    ) -> list[Mail]:
        deadline = time.monotonic() + within
        while True:
            found = self.to(address) if address else self.mails
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} mails after {within}s")
            await asyncio.sleep(0.01)


def response(**overrides: Any) -> ResponseReceived:
    """A canonical response (a detractor with a comment) as ingest would publish it."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "response_id": f"r-{uuid.uuid4().hex[:10]}",
        "revision": 0,
        "source": "api",
        "kind": "transactional",
        "touchpoint": "checkout",
        "account_id": "acc-1",
        "score": 3,
        "comment": "Checkout kept failing.",
        "respondent": {"name": "Maria Souza", "email": "maria@example.com"},
        "submitted_at": now - timedelta(minutes=1),
        "received_at": now,
        "locale": "en",
        "attributes": {},
    }
    fields.update(overrides)
    fields["bucket"] = bucket_for(fields["score"])
    return ResponseReceived.model_validate(fields)


async def driver_connection(db: AsyncSession | AsyncConnection) -> Any:
    """The asyncpg connection under `db`, inside `db`'s transaction: the decide step runs on
    asyncpg directly, and what it writes there commits or rolls back with `db` (a test's
    rolled-back transaction included)."""
    await db.execute(text("SELECT 1"))  # SQLAlchemy's adapter begins its transaction lazily
    connection = db if isinstance(db, AsyncConnection) else await db.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def add_person(
    db: AsyncSession | AsyncConnection,
    person_id: str,
    *,
    name: str | None = None,
    email_address: str | None = None,
    slack_channel: str | None = None,
    slack_webhook_url: str | None = None,
    telegram_chat_id: str | None = None,
    locale: str = "en",
    timezone: str = "UTC",
) -> None:
    await db.execute(
        text(
            "INSERT INTO people (id, name, email, slack_channel, slack_webhook_url,"
            " telegram_chat_id, locale, timezone) VALUES (:id, :name, :email, :slack_channel,"
            " :slack_webhook_url, :telegram_chat_id, :locale, :timezone)"
        ),
        {
            "id": person_id,
            "name": name or person_id.title(),
            "email": email_address,
            "slack_channel": slack_channel,
            "slack_webhook_url": slack_webhook_url,
            "telegram_chat_id": telegram_chat_id,
            "locale": locale,
            "timezone": timezone,
        },
    )


async def add_account(
    db: AsyncSession | AsyncConnection,
    account_id: str,
    *,
    name: str = "Acme Retail",
    segment: str | None = "retail",
    owner_id: str | None = None,
    backup_owner_id: str | None = None,
    manager_id: str | None = None,
) -> None:
    await db.execute(
        text(
            "INSERT INTO accounts (id, name, segment, owner_id, backup_owner_id, manager_id)"
            " VALUES (:id, :name, :segment, :owner, :backup, :manager)"
        ),
        {
            "id": account_id,
            "name": name,
            "segment": segment,
            "owner": owner_id,
            "backup": backup_owner_id,
            "manager": manager_id,
        },
    )


async def set_team_fallback(db: AsyncSession | AsyncConnection, person_id: str | None) -> None:
    await db.execute(text("UPDATE team SET fallback_person_id = :p"), {"p": person_id})


@dataclass
class Pipeline:
    """Decide + delivery loop on a real, committed database, sending to local fake vendors.

    `respond(event)` runs the decide step in its own committed transaction (as the Kafka
    handler does) and wakes the loop; the vendors record what reaches them.
    """

    settings: Any
    sessionmaker: Any
    engine: Any
    decider: Any
    loops: list[Any]
    slack: Any
    telegram: Any
    mail: MailSink

    async def respond(self, event: ResponseReceived) -> uuid.UUID:
        async with session_scope(self.sessionmaker) as session:
            repository = AlertRepository(await driver_connection(session))
            result = await self.decider.decide(repository, event.event_id, event)
        for loop in self.loops:
            loop.wake()
        alert_id: uuid.UUID = result.alert_id
        return alert_id

    async def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as connection:
            result = await connection.execute(text(sql), params)
            return [dict(row) for row in result.mappings()]

    async def deliveries(self, alert_id: uuid.UUID) -> dict[str, dict[str, Any]]:
        found = await self.query(
            "SELECT * FROM deliveries WHERE alert_id = :a AND purpose = 'alert'", a=alert_id
        )
        return {row["channel"]: row for row in found}

    async def attempts(self, delivery_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self.query(
            "SELECT * FROM delivery_attempts WHERE delivery_id = :d ORDER BY id", d=delivery_id
        )

    async def wait_until(
        self, sql: str, expected: Any, *, within: float = 15, **params: Any
    ) -> None:
        """Poll `sql` (one value) until it equals `expected`."""
        deadline = time.monotonic() + within
        value: Any = None
        while time.monotonic() < deadline:
            rows = await self.query(sql, **params)
            value = next(iter(rows[0].values())) if rows else None
            if value == expected:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{sql!r} is {value!r}, expected {expected!r} after {within}s")

    async def wait_status(
        self, alert_id: uuid.UUID, channel: str, status: str, *, within: float = 15
    ) -> dict[str, Any]:
        await self.wait_until(
            "SELECT status FROM deliveries WHERE alert_id = :a AND channel = :c"
            " AND purpose = 'alert'",
            status,
            a=alert_id,
            c=channel,
            within=within,
        )
        return (await self.deliveries(alert_id))[channel]


class ServiceProcess:
    """A console script (`npsloop-ingest`, `npsloop-alerts serve`) run as a real subprocess.

    Output goes to `log_path`; `wait_ready()` polls `/readyz`; `kill()` is SIGKILL (no cleanup,
    no final commit), `stop()` is SIGTERM (graceful).
    """

    def __init__(self, args: list[str], env: dict[str, str], port: int, log_path: Any) -> None:
        self.args = args
        self.env = env
        self.port = port
        self.log_path = log_path
        self.process: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:

        log = Path(self.log_path).open("ab")  # noqa: SIM115 - handed to the child process
        self.process = subprocess.Popen(
            self.args, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def log_tail(self, lines: int = 60) -> str:

        text_lines = Path(self.log_path).read_text(errors="replace").splitlines()
        return "\n".join(text_lines[-lines:])

    async def wait_ready(self, within: float = 90) -> None:

        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.args[0]} exited:\n{self.log_tail()}")
                try:
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.args[0]} not ready after {within}s:\n{self.log_tail()}")

    def kill(self) -> None:

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    async def stop(self) -> None:

        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.kill()


INGEST_TOKEN = "e2e-ingest-token-7c41b9d2aa"
ADMIN_TOKEN = "e2e-admin-token-52f0c8e1b3d4"


@dataclass
class System:
    """Kafka + PostgreSQL + `npsloop-ingest` + `npsloop-alerts serve` (real subprocesses) with the
    local Slack, Telegram and SMTP receivers in the test process."""

    kafka: str
    database_url: str
    topic: str
    slack: Any
    telegram: Any
    mail: MailSink
    workdir: Any
    ingest: ServiceProcess | None = None
    alerts: ServiceProcess | None = None
    extra_alerts_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        kafka: str,
        database_url: str,
        topic: str,
        workdir: Path,
        *,
        extra_alerts_env: dict[str, str] | None = None,
    ) -> AsyncIterator[System]:
        """Fresh vendor fakes and a mail sink, ingest and alerts started; all stopped after."""
        slack = await FakeSlack().start()
        telegram = await FakeTelegram().start()
        mail = await MailSink().start()
        system = cls(
            kafka,
            database_url,
            topic,
            slack,
            telegram,
            mail,
            workdir,
            extra_alerts_env=extra_alerts_env or {},
        )
        try:
            await system.start_ingest()
            await system.start_alerts()
            yield system
        finally:
            await system.stop()
            for server in (slack, telegram, mail):
                await server.stop()

    def alerts_env(self) -> dict[str, str]:
        return {
            "NPSLOOP_DATABASE_URL": self.database_url,
            "NPSLOOP_KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "NPSLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
            "NPSLOOP_SMTP_URL": self.mail.url,
            "NPSLOOP_SLACK_API_URL": self.slack.api_url,
            "NPSLOOP_SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
            "NPSLOOP_ALERTS_SLACK_BOT_MODE": "true",
            "NPSLOOP_TELEGRAM_API_URL": self.telegram.api_url,
            "NPSLOOP_TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
            "NPSLOOP_ALERTS_RESPONSES_TOPIC": self.topic,
            "NPSLOOP_ALERTS_EVENTS_TOPIC": f"{self.topic}.alerts",
            "NPSLOOP_ALERTS_CONSUMER_GROUP": f"{self.topic}.group",
            "NPSLOOP_ALERTS_EMAIL_HOLD_SECONDS": "4",
            "NPSLOOP_DELIVERY_BACKOFF_BASE_SECONDS": "0.3",
            "NPSLOOP_DELIVERY_BACKOFF_FACTOR": "2",
            "NPSLOOP_DELIVERY_BACKOFF_JITTER": "0.1",
            "NPSLOOP_DELIVERY_MAX_ATTEMPTS": "5",
            "NPSLOOP_DELIVERY_SEND_TIMEOUT_SECONDS": "1.5",
            "NPSLOOP_DELIVERY_LEASE_SECONDS": "5",
            "NPSLOOP_DELIVERY_RATE_WINDOW_SECONDS": "2",
            "NPSLOOP_DELIVERY_POLL_INTERVAL_SECONDS": "0.3",
            "NPSLOOP_ALERTS_PUBLIC_BASE_URL": "https://npsloop.test",
            "NPSLOOP_LOG_FORMAT": "text",
            "NPSLOOP_LOG_LEVEL": "WARNING",
            **self.extra_alerts_env,
        }

    async def start_ingest(self) -> None:

        port = free_port()
        env = {
            "NPSLOOP_KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "NPSLOOP_INGEST_SOURCES": json.dumps({"api": {"type": "api", "token": INGEST_TOKEN}}),
            "NPSLOOP_INGEST_TOPIC": self.topic,
            "NPSLOOP_LOG_FORMAT": "text",
            "NPSLOOP_LOG_LEVEL": "WARNING",
        }
        script = str(Path(sys.executable).parent / "npsloop-ingest")
        self.ingest = ServiceProcess(
            [script, "--port", str(port)], env, port, Path(self.workdir) / "ingest.log"
        ).start()
        await self.ingest.wait_ready()

    async def start_alerts(self) -> ServiceProcess:

        port = free_port()
        script = str(Path(sys.executable).parent / "npsloop-alerts")
        self.alerts = ServiceProcess(
            [script, "serve", "--port", str(port)],
            self.alerts_env(),
            port,
            Path(self.workdir) / "alerts.log",
        ).start()
        await self.alerts.wait_ready()
        return self.alerts

    async def stop(self) -> None:
        for process in (self.alerts, self.ingest):
            if process is not None:
                await process.stop()

    async def post(self, **fields: Any) -> dict[str, Any]:
        """POST one response to ingest; returns the 202 body."""

        assert self.ingest is not None
        body = {
            "kind": "transactional",
            "touchpoint": "checkout",
            "submitted_at": datetime.now(UTC).isoformat(),
            **fields,
        }
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(
                f"{self.ingest.url}/v1/responses",
                json=body,
                headers={"Authorization": f"Bearer {INGEST_TOKEN}"},
            )
        assert answer.status_code == 202, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def admin(self, method: str, path: str, **kwargs: Any) -> Any:

        assert self.alerts is not None
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.request(
                method,
                f"{self.alerts.url}{path}",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                **kwargs,
            )
        assert answer.status_code < 400, answer.text
        return answer.json()

    async def owner(self, **contact: Any) -> tuple[str, str]:
        """A fresh person owning a fresh account (through the admin API): (account, person)."""
        suffix = uuid.uuid4().hex[:8]
        person, account = f"p-{suffix}", f"acc-{suffix}"
        await self.admin("PUT", f"/v1/people/{person}", json={"name": f"Owner {suffix}", **contact})
        await self.admin(
            "PUT", f"/v1/accounts/{account}", json={"name": f"Account {suffix}", "owner_id": person}
        )
        return account, person

    async def alerts_of(self, account: str) -> list[dict[str, Any]]:
        page = await self.admin("GET", "/v1/alerts", params={"account_id": account})
        return list(page["items"])

    async def alert_of(
        self, account: str, response_id: str | None = None, within: float = 30
    ) -> dict[str, Any]:
        """The alert of `account` (for `response_id`), with its deliveries, once it exists."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = [
                item
                for item in await self.alerts_of(account)
                if response_id is None or item["response_id"] == response_id
            ]
            if found:
                assert len(found) == 1, found
                return dict(await self.admin("GET", f"/v1/alerts/{found[0]['id']}"))
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no alert for {account} after {within}s")

    async def wait_delivery(
        self,
        account: str,
        channel: str,
        status: str,
        *,
        response_id: str | None = None,
        within: float = 30,
        **match: Any,
    ) -> dict[str, Any]:
        """Poll until the account's `channel` delivery has `status` (and the `match` fields)."""
        deadline = time.monotonic() + within
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            alert = await self.alert_of(account, response_id)
            found = [d for d in alert["deliveries"] if d["channel"] == channel]
            wanted = {"status": status, **match}
            if found and all(found[0][key] == value for key, value in wanted.items()):
                return dict(found[0])
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{channel} delivery of {account} not {status}/{match}: {found}")
