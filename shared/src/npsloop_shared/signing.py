"""Standard Webhooks signatures (HMAC-SHA256), for webhooks we receive and webhooks we send.

Signed content is `<webhook-id>.<webhook-timestamp>.<raw body>`, keyed with the base64-decoded
part of a `whsec_…` secret; `webhook-signature` holds space-separated `v1,<base64>` entries so a
sender can sign with an old and a new secret while a key rotates. A timestamp further than the
tolerance (5 minutes) from now is refused, which bounds how long a captured request can be
replayed; refusing an already-accepted `webhook-id` inside that window is the receiver's job.

Every comparison of secret material is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret
SIGNATURE_VERSION: Final = "v1"
DEFAULT_TOLERANCE_SECONDS: Final = 5 * 60

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"

K = TypeVar("K")


class SignatureError(Exception):
    """The request's signature cannot be accepted; `str()` says why without quoting secrets."""


class MissingSignatureHeaders(SignatureError):
    pass


class TimestampOutsideTolerance(SignatureError):
    pass


class NoMatchingSignature(SignatureError):
    pass


def decode_secret(secret: str) -> bytes:
    """Key bytes of a `whsec_<base64>` secret; raises `ValueError` when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret must start with {SECRET_PREFIX!r}")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # Some issuers drop the base64 padding; restore it before the strict decode.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("a signing secret must be base64 after its 'whsec_' prefix") from exc
    if len(key) < 16:
        raise ValueError("a signing secret must carry at least 16 bytes of key")
    return key


def generate_secret(key_bytes: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(key_bytes)).decode()


def sign(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    """One `v1,<base64>` signature entry for this id, timestamp (Unix seconds) and body."""
    digest = _digest(key, webhook_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    webhook_id: str
    webhook_timestamp: str
    webhook_signature: str

    def as_dict(self) -> dict[str, str]:
        return {
            ID_HEADER: self.webhook_id,
            TIMESTAMP_HEADER: self.webhook_timestamp,
            SIGNATURE_HEADER: self.webhook_signature,
        }


def signature_headers(
    secrets_: list[str] | str, webhook_id: str, body: bytes, *, timestamp: int | None = None
) -> SignedHeaders:
    """Headers for an outgoing webhook; pass several secrets to sign with each (key rotation)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    keys = [decode_secret(s) for s in ([secrets_] if isinstance(secrets_, str) else secrets_)]
    signature = " ".join(sign(key, webhook_id, stamp, body) for key in keys)
    return SignedHeaders(webhook_id, stamp, signature)


def verify(
    keys: Mapping[K, bytes],
    headers: SignedHeaders,
    body: bytes,
    *,
    now: float | None = None,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> K:
    """Which of `keys` signed this request; raises a `SignatureError` subclass when none did.

    Trying every candidate key lets one endpoint serve several senders without the request
    naming its sender; the first key with any matching `v1` entry wins.
    """
    if not (headers.webhook_id and headers.webhook_timestamp and headers.webhook_signature):
        raise MissingSignatureHeaders(
            "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    _check_timestamp(headers.webhook_timestamp, now, tolerance_seconds)
    presented = _presented_signatures(headers.webhook_signature)
    for name, key in keys.items():
        expected = _digest(key, headers.webhook_id, headers.webhook_timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in presented):
            return name
    raise NoMatchingSignature("no webhook-signature entry matches a known signing secret")


def _digest(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return mac.digest()


def _check_timestamp(value: str, now: float | None, tolerance_seconds: int) -> None:
    if not value.isascii() or not value.isdigit():
        raise TimestampOutsideTolerance("webhook-timestamp must be an integer of Unix seconds")
    current = time.time() if now is None else now
    if abs(current - int(value)) > tolerance_seconds:
        raise TimestampOutsideTolerance(
            f"webhook-timestamp is more than {tolerance_seconds} seconds from the server's clock"
        )


def _presented_signatures(header: str) -> list[bytes]:
    """The decodable `v1` entries; other versions (e.g. asymmetric `v1a`) are ignored."""
    decoded = []
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            decoded.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue
    return decoded
