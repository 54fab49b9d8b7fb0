"""Prometheus metrics of the delivery loop (registered once per registry).

Consumer lag is exported by the shared consumer wrapper (`npsloop_consumer_lag`).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from npsloop_alerts.delivery.repository import QueueStats
from npsloop_shared.metrics import PerRegistry

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class DeliveryMetrics:
    deliveries: Counter
    attempt_seconds: Histogram
    queue: Gauge
    oldest_due_seconds: Gauge
    in_process: Gauge
    lease_expired: Counter
    destinations_disabled: Counter
    notices_unaddressed: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> DeliveryMetrics:
        return cls(
            deliveries=Counter(
                "npsloop_alerts_deliveries",
                "Finished delivery attempts by channel and outcome (sent, edited, retried, dead).",
                ["channel", "outcome"],
                registry=registry,
            ),
            attempt_seconds=Histogram(
                "npsloop_alerts_delivery_attempt_seconds",
                "Network time of one send or edit.",
                ["channel"],
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            queue=Gauge(
                "npsloop_alerts_delivery_queue",
                "Deliveries by state: pending (all), due (pending and due now), in_flight, dead.",
                ["state"],
                registry=registry,
            ),
            oldest_due_seconds=Gauge(
                "npsloop_alerts_delivery_oldest_due_seconds",
                "How long the oldest due, unsent delivery has been waiting.",
                registry=registry,
            ),
            in_process=Gauge(
                "npsloop_alerts_delivery_in_process",
                "Deliveries this process holds right now (waiting for a slot or sending).",
                registry=registry,
            ),
            lease_expired=Counter(
                "npsloop_alerts_delivery_lease_expired",
                "Deliveries claimed again after their holder died mid-send (possible repeats).",
                registry=registry,
            ),
            destinations_disabled=Counter(
                "npsloop_alerts_destinations_disabled",
                "Destinations disabled after repeated permanent failures.",
                registry=registry,
            ),
            notices_unaddressed=Counter(
                "npsloop_alerts_destination_notices_unaddressed",
                "Disabled destinations nobody could be told about (no manager or team email).",
                registry=registry,
            ),
        )

    def observe_queue(self, stats: QueueStats) -> None:
        self.queue.labels("pending").set(stats.pending)
        self.queue.labels("due").set(stats.due)
        self.queue.labels("in_flight").set(stats.in_flight)
        self.queue.labels("dead").set(stats.dead)
        self.oldest_due_seconds.set(stats.oldest_due_age_seconds)


delivery_metrics = PerRegistry(DeliveryMetrics.register)
