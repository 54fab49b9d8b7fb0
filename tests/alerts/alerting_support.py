"""Helpers for the alerting, delivery and end-to-end tests: directory rows, responses, a mail sink.

The SMTP sink is a real aiosmtpd server on a local port; every message it accepts is kept
(parsed) with its arrival time, like the fake Slack and Telegram servers keep their requests.
"""

from __future__ import annotations

import asyncio
import email
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from npsloop_shared.contracts import ResponseReceived, bucket_for


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


@dataclass
class MailSink:
    """aiosmtpd handler keeping every message; `refuse[address]` scripts a RCPT reply."""

    mails: list[Mail] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        parsed = email.message_from_bytes(content, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(Mail(parsed, tuple(envelope.rcpt_tos), time.time()))
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
        from npsloop_alerts.alerting.repository import AlertRepository
        from npsloop_shared.db import session_scope

        async with session_scope(self.sessionmaker) as session:
            result = await self.decider.decide(AlertRepository(session), event.event_id, event)
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
