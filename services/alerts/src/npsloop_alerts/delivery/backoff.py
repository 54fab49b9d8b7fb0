"""When to try a failed delivery again: exponential backoff with jitter, or the vendor's hint.

Policy is data (a `RetryPolicy` built from settings), so call sites never decide by themselves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from npsloop_alerts.delivery.settings import DeliverySettings


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    factor: float
    max_seconds: float
    jitter: float
    max_retry_after_seconds: float

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.delivery_max_attempts,
            base_seconds=settings.delivery_backoff_base_seconds,
            factor=settings.delivery_backoff_factor,
            max_seconds=settings.delivery_backoff_max_seconds,
            jitter=settings.delivery_backoff_jitter,
            max_retry_after_seconds=settings.delivery_max_retry_after_seconds,
        )

    def exhausted(self, attempts: int) -> bool:
        """True when `attempts` failed tries leave no retry."""
        return attempts >= self.max_attempts

    def delay_seconds(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Wait after failed try number `attempt` (1-based).

        A vendor's hint (Slack `Retry-After`, Telegram `parameters.retry_after`) wins: it is the
        earliest moment the vendor will accept the message, so backing off less would only earn
        another 429, and more would delay the owner for nothing. Jitter spreads the retries of
        many deliveries that failed together (one outage) so they do not return as one wave.
        """
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after_seconds)
        exponent = max(attempt - 1, 0)
        # Cap the exponent before the power: factor**exponent overflows for large attempt counts.
        raw = self.base_seconds * self.factor ** min(exponent, 64)
        capped = min(raw, self.max_seconds)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(capped * (1 + spread), 0.0)

    def next_attempt_at(
        self,
        now: datetime,
        attempt: int,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> datetime:
        return now + timedelta(seconds=self.delay_seconds(attempt, retry_after, rng))
