"""Prometheus metrics of one ingest app, in a registry of its own.

Label values come from small closed sets (HTTP statuses, rejection reasons, configured source
ids), so cardinality stays bounded whatever clients send. With several uvicorn workers, set
`PROMETHEUS_MULTIPROC_DIR` (`npsloop-ingest --workers N` does) and `/metrics` sums the workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

# Produce latency is dominated by the broker round trip and batching: sub-millisecond to seconds.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REJECTION_REASONS = (
    "missing_credentials",
    "bad_credentials",
    "stale_signature",
    "replayed_webhook",
    "unsupported_media_type",
    "too_large",
    "malformed_json",
    "invalid",
    "broker_unavailable",
    "disconnected",
    "other",
)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class IngestMetrics:
    def __init__(self, source_ids: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "npsloop_ingest_requests",
            "POST /v1/responses requests, by HTTP status of the answer.",
            ["status"],
            registry=self.registry,
        )
        self.accepted = Counter(
            "npsloop_ingest_accepted_responses",
            "Responses acknowledged by Kafka and answered 202, by source.",
            ["source"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "npsloop_ingest_rejected_requests",
            "Requests answered with an error, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "npsloop_ingest_produce_seconds",
            "Time from handing a request's events to the producer until Kafka acknowledged all.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Children bound once: `labels()` per request would cost a lock and a dict lookup.
        self._accepted_by_source = {s: self.accepted.labels(source=s) for s in source_ids}
        self._rejected_by_reason = {r: self.rejected.labels(reason=r) for r in REJECTION_REASONS}
        self._requests_by_status: dict[int, Counter] = {}

    def request_answered(self, status: int) -> None:
        child = self._requests_by_status.get(status)
        if child is None:
            child = self._requests_by_status[status] = self.requests.labels(status=str(status))
        child.inc()

    def responses_accepted(self, source_id: str, count: int) -> None:
        self._accepted_by_source[source_id].inc(count)

    def request_rejected(self, reason: str) -> None:
        self._rejected_by_reason[reason].inc()

    def exposition(self) -> bytes:
        """The text format for `/metrics`; sums all workers' files in multiprocess mode."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
