"""Turns directory changes into `npsloop.accounts.v1` records, written to the outbox.

The record is written in the same transaction as the change, so a change is published if and only
if it committed. The outbox relay (`npsloop_alerts.outbox`, configured in `directory.relay`)
publishes outbox rows in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from npsloop_alerts.directory.models import Account, OutboxMessage, Person
from npsloop_alerts.directory.repository import OutboxRepository
from npsloop_shared.cloudevents import CloudEventAttributes
from npsloop_shared.contracts import (
    ACCOUNT_DELETED_TYPE,
    ACCOUNT_UPSERTED_TYPE,
    ACCOUNTS_TOPIC,
    AccountContact,
    AccountUpserted,
)

EVENT_SOURCE = "npsloop-alerts/directory"


def account_upserted(account: Account, contacts: Mapping[str, Person]) -> AccountUpserted:
    """The event for `account`; `contacts` holds (at least) its owner, backup owner and manager."""

    def contact(person_id: str | None) -> AccountContact | None:
        person = contacts.get(person_id) if person_id else None
        if person is None:
            return None
        return AccountContact(
            person_id=person.id,
            name=person.name,
            email=person.email,
            locale=person.locale,
            timezone=person.timezone,
            active=person.active,
        )

    return AccountUpserted(
        account_id=account.id,
        name=account.name,
        segment=account.segment,
        tier=account.tier,
        locale=account.locale,
        timezone=account.timezone,
        attributes=dict(account.attributes),
        owner_id=account.owner_id,
        backup_owner_id=account.backup_owner_id,
        manager_id=account.manager_id,
        owner=contact(account.owner_id),
        backup_owner=contact(account.backup_owner_id),
        manager=contact(account.manager_id),
        version=account.version,
        updated_at=account.updated_at,
    )


class AccountPublisher:
    """Writes account events to the outbox; ids are random but stored, so a re-publish after a
    relay crash carries the same `ce_id` and consumers dedupe it."""

    def __init__(self, outbox: OutboxRepository, topic: str = ACCOUNTS_TOPIC) -> None:
        self._outbox = outbox
        self._topic = topic

    def upserted(self, account: Account, contacts: Mapping[str, Person]) -> None:
        event = account_upserted(account, contacts)
        self._write(account.id, ACCOUNT_UPSERTED_TYPE, event.model_dump_json().encode())

    def deleted(self, account_id: str) -> None:
        self._write(account_id, ACCOUNT_DELETED_TYPE, None)  # tombstone

    def _write(self, account_id: str, event_type: str, value: bytes | None) -> None:
        attributes = CloudEventAttributes(
            id=str(uuid.uuid4()),
            type=event_type,
            source=EVENT_SOURCE,
            time=datetime.now(UTC),
            subject=account_id,
        )
        headers = [[key, raw.decode()] for key, raw in attributes.to_headers()]
        self._outbox.add(
            OutboxMessage(topic=self._topic, key=account_id, value=value, headers=headers)
        )
