"""Every way ingest refuses a request, each with its HTTP status and a metrics `reason`.

All render as RFC 9457 problem+json through `npsloop_shared.errors`. None of them quotes the
request's content (comments, emails) or any credential.
"""

from __future__ import annotations

from typing import ClassVar

from npsloop_shared.errors import (
    BadRequest,
    NpsloopError,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from npsloop_shared.kafka.producer import BrokerUnavailable

# RFC 9110: a 401 names the schemes the client may use.
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="npsloop-ingest"'}


class MissingCredentials(Unauthorized):
    reason: ClassVar[str] = "missing_credentials"

    def __init__(self) -> None:
        super().__init__(
            "Send `Authorization: Bearer <token>` or a Standard Webhooks signature "
            "(webhook-id, webhook-timestamp, webhook-signature).",
            headers=_CHALLENGE,
        )


class BadCredentials(Unauthorized):
    reason: ClassVar[str] = "bad_credentials"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers=_CHALLENGE)


class StaleSignature(Unauthorized):
    reason: ClassVar[str] = "stale_signature"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers=_CHALLENGE)


class ReplayedWebhook(Unauthorized):
    reason: ClassVar[str] = "replayed_webhook"

    def __init__(self) -> None:
        super().__init__(
            "This webhook-id was already accepted; a replayed webhook is refused.",
            headers=_CHALLENGE,
        )


class NotJson(UnsupportedMediaType):
    reason: ClassVar[str] = "unsupported_media_type"

    def __init__(self) -> None:
        super().__init__("The body must be sent as `Content-Type: application/json`.")


class EncodedBody(UnsupportedMediaType):
    """RFC 9110 §15.5.16: a content coding the server does not apply is a 415 that names the
    codings it accepts (only `identity`)."""

    reason: ClassVar[str] = "unsupported_media_type"

    def __init__(self) -> None:
        super().__init__(
            "Content-Encoding is not supported; send the body uncompressed.",
            headers={"Accept-Encoding": "identity"},
        )


class BodyTooLarge(PayloadTooLarge):
    reason: ClassVar[str] = "too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The body exceeds the limit of {limit} bytes.")


class MalformedJson(BadRequest):
    reason: ClassVar[str] = "malformed_json"


class InvalidResponses(ValidationFailed):
    reason: ClassVar[str] = "invalid"


class ClientDisconnected(BadRequest):
    reason: ClassVar[str] = "disconnected"

    def __init__(self) -> None:
        super().__init__("The client disconnected before sending the whole body.")


def rejection_reason(error: NpsloopError) -> str:
    """The metrics label for `error` (one of `metrics.REJECTION_REASONS`)."""
    if isinstance(error, BrokerUnavailable):
        return "broker_unavailable"
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) else "other"
