"""Standard Webhooks signing, checked against the `standardwebhooks` reference library."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from npsloop_shared.signing import (
    MissingSignatureHeaders,
    NoMatchingSignature,
    SignedHeaders,
    TimestampOutsideTolerance,
    decode_secret,
    generate_secret,
    sign,
    signature_headers,
    verify,
)

BODIES = [b"{}", b'{"score": 7, "comment": "caf\xc3\xa9 \xe2\x82\xac"}', b"x" * 100_000]


def library_headers(secret: str, webhook_id: str, body: bytes, at: datetime) -> SignedHeaders:
    return SignedHeaders(
        webhook_id, str(int(at.timestamp())), Webhook(secret).sign(webhook_id, at, body.decode())
    )


@pytest.mark.parametrize("body", BODIES, ids=["empty", "unicode", "large"])
def test_sign_matches_the_reference_library(body: bytes) -> None:
    secret = generate_secret()
    at = datetime.fromtimestamp(1_700_000_123, UTC)

    ours = sign(decode_secret(secret), "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "1700000123", body)

    assert ours == Webhook(secret).sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", at, body.decode())


@pytest.mark.parametrize("body", BODIES, ids=["empty", "unicode", "large"])
def test_we_verify_what_the_library_signs(body: bytes) -> None:
    secret = generate_secret()
    headers = library_headers(secret, "msg_1", body, datetime.now(UTC))

    assert verify({"source": decode_secret(secret)}, headers, body) == "source"


def test_the_library_verifies_what_we_sign() -> None:
    secret = generate_secret()
    body = b'{"hello": "world"}'

    headers = signature_headers(secret, "msg_ours", body)

    assert Webhook(secret).verify(body, headers.as_dict()) == {"hello": "world"}


def test_known_vector_from_the_specification_examples() -> None:
    # The library's README secret and message, signed independently here.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

    assert decode_secret(secret) == key
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}') == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_rotation_any_matching_entry_is_enough() -> None:
    old, new = generate_secret(), generate_secret()
    body = b"{}"

    headers = signature_headers([old, new], "msg_rot", body)

    assert len(headers.webhook_signature.split()) == 2
    assert verify({"api": decode_secret(new)}, headers, body) == "api"
    assert verify({"api": decode_secret(old)}, headers, body) == "api"


def test_the_signing_source_is_found_among_several() -> None:
    keys = {name: decode_secret(generate_secret()) for name in ("a", "b", "c")}
    secret_b = "whsec_" + base64.b64encode(keys["b"]).decode()

    headers = signature_headers(secret_b, "msg", b"{}")

    assert verify(keys, headers, b"{}") == "b"


def test_no_matching_entry() -> None:
    headers = signature_headers(generate_secret(), "msg", b"{}")

    with pytest.raises(NoMatchingSignature):
        verify({"api": decode_secret(generate_secret())}, headers, b"{}")


def test_body_change_breaks_the_signature() -> None:
    secret = generate_secret()
    headers = signature_headers(secret, "msg", b'{"score": 1}')

    with pytest.raises(NoMatchingSignature):
        verify({"api": decode_secret(secret)}, headers, b'{"score": 9}')


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamp_beyond_tolerance(offset: int) -> None:
    secret = generate_secret()
    now = time.time()
    headers = signature_headers(secret, "msg", b"{}", timestamp=int(now) + offset)

    with pytest.raises(TimestampOutsideTolerance):
        verify({"api": decode_secret(secret)}, headers, b"{}", now=now)


@pytest.mark.parametrize("offset", [-299, 299])
def test_timestamp_within_tolerance(offset: int) -> None:
    secret = generate_secret()
    now = time.time()
    headers = signature_headers(secret, "msg", b"{}", timestamp=int(now) + offset)

    assert verify({"api": decode_secret(secret)}, headers, b"{}", now=now) == "api"


@pytest.mark.parametrize("stamp", ["1700000000.5", "-5", "soon", "", "１２３"])
def test_timestamp_must_be_integer_seconds(stamp: str) -> None:
    secret = generate_secret()
    headers = SignedHeaders("msg", stamp, "v1,AAAA")

    with pytest.raises((TimestampOutsideTolerance, MissingSignatureHeaders)):
        verify({"api": decode_secret(secret)}, headers, b"{}")


def test_missing_headers() -> None:
    with pytest.raises(MissingSignatureHeaders):
        verify({"api": b"k" * 32}, SignedHeaders("", "1", "v1,AAAA"), b"{}")


def test_other_versions_and_garbage_entries_are_ignored() -> None:
    secret = generate_secret()
    good = signature_headers(secret, "msg", b"{}")
    messy = SignedHeaders(
        good.webhook_id,
        good.webhook_timestamp,
        f"v1a,c2lnbmF0dXJl v1,!!!notbase64 nonsense {good.webhook_signature}",
    )

    assert verify({"api": decode_secret(secret)}, messy, b"{}") == "api"


@pytest.mark.parametrize(
    "secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_***", "whsec_c2hvcnQ=", "whsec_"]
)
def test_decode_secret_refuses_what_is_not_a_whsec_key(secret: str) -> None:
    with pytest.raises(ValueError, match="signing secret"):
        decode_secret(secret)


def test_decode_secret_tolerates_missing_padding() -> None:
    secret = generate_secret(key_bytes=31)
    unpadded = secret.rstrip("=")

    assert decode_secret(unpadded) == decode_secret(secret)
