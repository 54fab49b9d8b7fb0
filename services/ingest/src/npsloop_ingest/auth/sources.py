"""Who is posting: a configured source, proven by a bearer token or a Standard Webhooks signature.

Tokens are compared as SHA-256 digests with `hmac.compare_digest` against every source, so
neither the token's length nor which byte differs shows in the timing. A signed request does not
name its source: each source's signing secret is tried in turn, and the first whose signature
matches is the sender. A signed request's `webhook-id` is remembered once accepted, and the same
id is refused while its signature could still be valid (see `replay.py`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from npsloop_ingest.auth.replay import ReplayGuard
from npsloop_ingest.rejections import BadCredentials, ReplayedWebhook, StaleSignature
from npsloop_ingest.settings import SourceConfig
from npsloop_shared.signing import (
    NoMatchingSignature,
    SignatureError,
    SignedHeaders,
    TimestampOutsideTolerance,
    decode_secret,
    verify,
)

_BEARER_PREFIX = b"bearer "
_MAX_VERIFIED_HEADERS = 64


@dataclass(frozen=True, slots=True)
class Authenticated:
    source_id: str
    webhook_id: str | None = None  # set when the request was signed


class SourceAuthenticator:
    def __init__(
        self,
        sources: Mapping[str, SourceConfig],
        *,
        replay_guard: ReplayGuard,
        tolerance_seconds: int,
    ) -> None:
        self._token_digests = [
            (source_id, _digest(config.token.get_secret_value().encode()))
            for source_id, config in sources.items()
            if config.token is not None
        ]
        self._signing_keys = {
            source_id: decode_secret(config.signing_secret.get_secret_value())
            for source_id, config in sources.items()
            if config.signing_secret is not None
        }
        self._replay_guard = replay_guard
        self._tolerance = tolerance_seconds
        # Header values already proven by the constant-time check above, so the hot path skips
        # the hashing. Only valid ones get in; a wrong token misses by hash, so the lookup
        # reveals nothing about how close it was. A handful of spellings per token at most.
        self._verified_headers: dict[bytes, Authenticated] = {}

    def bearer(self, authorization: bytes) -> Authenticated:
        """The source whose token `Authorization: Bearer <token>` carries, or `BadCredentials`."""
        known = self._verified_headers.get(authorization)
        if known is not None:
            return known
        if authorization[:7].lower() != _BEARER_PREFIX:
            raise BadCredentials("Only the Bearer authorization scheme is accepted.")
        presented = _digest(authorization[7:].strip())
        matched = None
        for source_id, expected in self._token_digests:
            # No early exit: the time taken does not depend on which source matched.
            if hmac.compare_digest(presented, expected):
                matched = source_id
        if matched is None:
            raise BadCredentials("The bearer token is not valid.")
        auth = Authenticated(matched)
        if len(self._verified_headers) < _MAX_VERIFIED_HEADERS:
            self._verified_headers[authorization] = auth
        return auth

    def signed(self, headers: SignedHeaders, body: bytes) -> Authenticated:
        """The source whose signing secret signed `body`, unless stale or already accepted."""
        try:
            source_id = verify(self._signing_keys, headers, body, tolerance_seconds=self._tolerance)
        except TimestampOutsideTolerance as exc:
            raise StaleSignature(str(exc)) from None
        except NoMatchingSignature:
            raise BadCredentials("The webhook signature does not match.") from None
        except SignatureError as exc:
            raise BadCredentials(str(exc)) from None
        if self._replay_guard.already_accepted(source_id, headers.webhook_id):
            raise ReplayedWebhook
        return Authenticated(source_id, headers.webhook_id)

    def accepted(self, auth: Authenticated) -> None:
        """Record that `auth`'s request was accepted, so a replay of it is refused."""
        if auth.webhook_id is not None:
            self._replay_guard.remember(auth.source_id, auth.webhook_id)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()
