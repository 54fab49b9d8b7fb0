"""Prometheus metrics of one ingest app: requests by status, accepted, rejected by reason, and
produce latency.

The hot path counts in plain integers — a prometheus_client `inc()` takes a lock, and several
per request cost more than the rest of the bookkeeping — and a collector turns the numbers into
metric families when `/metrics` is scraped. Label values come from closed sets (HTTP statuses,
rejection reasons, configured source ids), so cardinality stays bounded whatever clients send.
The numbers belong to one process: run one worker per container and scale with replicas, or
scrape each worker.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# Produce latency is the broker round trip plus batching: sub-millisecond to seconds.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

REJECTION_REASONS: Final = (
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
METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class IngestMetrics:
    def __init__(self, source_ids: Iterable[str]) -> None:
        self.requests_by_status: dict[int, int] = {}
        self.accepted_by_source = dict.fromkeys(source_ids, 0)
        self.rejected_by_reason = dict.fromkeys(REJECTION_REASONS, 0)
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_IngestCollector(self))

    def request_answered(self, status: int) -> None:
        self.requests_by_status[status] = self.requests_by_status.get(status, 0) + 1

    def responses_accepted(self, source_id: str, count: int) -> None:
        self.accepted_by_source[source_id] += count

    def request_rejected(self, reason: str) -> None:
        self.rejected_by_reason[reason] += 1

    def produce_observed(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def exposition(self) -> bytes:
        """The Prometheus text format for `/metrics`."""
        return generate_latest(self.registry)


class _IngestCollector(Collector):
    def __init__(self, metrics: IngestMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        yield _counter(
            "npsloop_ingest_requests",
            "POST /v1/responses requests, by HTTP status of the answer.",
            "status",
            {str(status): count for status, count in sorted(m.requests_by_status.items())},
        )
        yield _counter(
            "npsloop_ingest_accepted_responses",
            "Responses acknowledged by Kafka and answered 202, by source.",
            "source",
            m.accepted_by_source,
        )
        yield _counter(
            "npsloop_ingest_rejected_requests",
            "Requests answered with an error, by reason.",
            "reason",
            m.rejected_by_reason,
        )
        yield self._latency()

    def _latency(self) -> HistogramMetricFamily:
        m = self._metrics
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), m.latency_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return HistogramMetricFamily(
            "npsloop_ingest_produce_seconds",
            "Time from handing a request's events to the producer until Kafka acknowledged all.",
            buckets=buckets,
            sum_value=m.latency_sum,
        )


def _counter(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family
