"""Signed links to an alert's read-only page: what "read the whole comment" in a message opens.

The people who get alerts have no admin token, so the link itself is the credential (a
capability URL): `/alerts/{id}?exp=…&sig=…`, where `sig` is an HMAC-SHA256 of the alert id and the
expiry. The key is `NPSLOOP_ALERTS_LINK_SECRET`, or, when that is unset, one derived from
`NPSLOOP_ADMIN_TOKEN`, so every replica signs alike without more configuration (changing either
secret retires the links already sent). Without both, messages carry no link.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import urlencode

from npsloop_alerts.settings import AlertsSettings

PAGE_PATH: Final = "/alerts"
_DERIVATION_LABEL: Final = b"npsloop alert page links v1"
_SIGNATURE_HEX_CHARS: Final = 32  # 128 bits


class AlertLinks:
    def __init__(
        self,
        base_url: str,
        key: bytes,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._key = key
        self._ttl = ttl_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: AlertsSettings) -> AlertLinks | None:
        secret = settings.alerts_link_secret or settings.admin_token
        if secret is None:
            return None
        key = hmac.new(secret.get_secret_value().encode(), _DERIVATION_LABEL, "sha256").digest()
        return cls(
            settings.alerts_public_base_url,
            key,
            ttl_seconds=settings.alerts_link_ttl_days * 86_400,
        )

    def url(self, alert_id: str, *, lang: str | None = None) -> str:
        """The page of `alert_id`, valid for the configured time; `lang` is not signed (it only
        chooses the page's language)."""
        expires = int(self._clock() + self._ttl)
        query = {"exp": str(expires), "sig": self._signature(alert_id, expires)}
        if lang:
            query["lang"] = lang
        return f"{self._base_url}{PAGE_PATH}/{alert_id}?{urlencode(query)}"

    def verify(self, alert_id: str, expires: int, signature: str) -> bool:
        """True for a signature this key made for `alert_id` and `expires`, not yet expired."""
        expected = self._signature(alert_id, expires)
        return hmac.compare_digest(expected, signature) and expires >= self._clock()

    def _signature(self, alert_id: str, expires: int) -> str:
        message = f"{alert_id}\x1f{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_SIGNATURE_HEX_CHARS]
