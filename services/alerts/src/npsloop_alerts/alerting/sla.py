"""SLA clocks: how long an owner has to acknowledge and to resolve, per bucket and segment.

Configured as JSON in `NPSLOOP_ALERTS_SLA_POLICY`, e.g.::

    {"default": {"detractor": {"acknowledge_hours": 4, "resolve_hours": 48}},
     "segments": {"wholesale": {"detractor": {"acknowledge_hours": 2, "resolve_hours": 24}}}}

A segment entry overrides the default for the buckets it names. A bucket with no clock anywhere
gets no deadline (promoters, by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from npsloop_alerts.routing.rules import normalise_text
from npsloop_shared.contracts import Bucket

Hours = Annotated[float, Field(gt=0, le=24 * 365)]


class SlaClock(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    acknowledge_hours: Hours
    resolve_hours: Hours


class SlaPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: dict[Bucket, SlaClock] = Field(
        default_factory=lambda: {
            Bucket.DETRACTOR: SlaClock(acknowledge_hours=4, resolve_hours=48),
            Bucket.PASSIVE: SlaClock(acknowledge_hours=24, resolve_hours=24 * 7),
        }
    )
    segments: dict[str, dict[Bucket, SlaClock]] = Field(default_factory=dict)

    def clock_for(self, bucket: Bucket, segment: str | None) -> SlaClock | None:
        if segment:
            wanted = normalise_text(segment)
            for name, clocks in self.segments.items():
                if normalise_text(name) == wanted and bucket in clocks:
                    return clocks[bucket]
        return self.default.get(bucket)

    def deadlines(self, bucket: Bucket, segment: str | None, start: datetime) -> SlaDeadlines:
        """Deadlines counted from `start` (when the response reached us)."""
        clock = self.clock_for(bucket, segment)
        if clock is None:
            return SlaDeadlines(None, None)
        return SlaDeadlines(
            acknowledge_by=start + timedelta(hours=clock.acknowledge_hours),
            resolve_by=start + timedelta(hours=clock.resolve_hours),
        )


@dataclass(frozen=True, slots=True)
class SlaDeadlines:
    acknowledge_by: datetime | None
    resolve_by: datetime | None
