"""The directory's outbox: `OutboxRelay(DIRECTORY_OUTBOX, …)` publishes committed directory
changes to `npsloop.accounts.v1`.

Delivery semantics are the shared relay's (`npsloop_alerts.outbox`): at least once, in commit
order per account, the same `ce_id` on a re-publish (harmless on a compacted topic, deduplicated
by consumers); a NULL value is published as a tombstone.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from npsloop_alerts.directory.models import OutboxMessage
from npsloop_alerts.directory.repository import OUTBOX_RELAY_LOCK_KEY
from npsloop_alerts.outbox import OutboxSpec

PUBLISHED = Counter(
    "npsloop_alerts_directory_events_published", "accounts.v1 records published by the relay."
)
PENDING = Gauge(
    "npsloop_alerts_directory_outbox_pending", "Directory changes committed but not yet published."
)

DIRECTORY_OUTBOX = OutboxSpec(
    name="directory-outbox-relay",
    table=OutboxMessage.__tablename__,
    lock_key=OUTBOX_RELAY_LOCK_KEY,
    published=PUBLISHED,
    pending=PENDING,
)
