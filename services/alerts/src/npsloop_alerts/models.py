"""Every table of the alerts service, imported in one place so `Base.metadata` is complete
(Alembic's env and tests use it). Add each new feature's models module here."""

from __future__ import annotations

from npsloop_alerts.alerting.models import Alert, AlertOutboxMessage, ProcessedEvent
from npsloop_alerts.db import Base
from npsloop_alerts.delivery.models import Delivery, DeliveryAttempt, DeliveryDestination
from npsloop_alerts.directory.models import Account, OutboxMessage, Person, Team
from npsloop_alerts.routing.models import RoutingRule

__all__ = [
    "Account",
    "Alert",
    "AlertOutboxMessage",
    "Base",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryDestination",
    "OutboxMessage",
    "Person",
    "ProcessedEvent",
    "RoutingRule",
    "Team",
]
