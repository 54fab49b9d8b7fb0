"""`POST /v1/responses`, start to finish: the one implementation both HTTP entry points call.

Delivery semantics: the answer is `202 {"accepted": n, "ids": [...]}` only after Kafka
acknowledged every event of the request (`acks=all`, idempotent producer); `ids` are the events'
`ce_id`s. If the acknowledgement does not come within the ack timeout, or the broker is away, the
answer is 503 with `Retry-After` and nothing is claimed — some events may still land, and the
client's retry then produces the same `ce_id`s, which consumers dedupe. A batch is all or
nothing: one invalid response, and no event of it is produced.

Order of checks: declared size (413), content type and coding (415) and a bearer token (401)
before reading, the streamed size (413) while reading, a webhook signature (401) over the bytes
read, then JSON (400) and validation (422), then Kafka (503 or 202).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from npsloop_ingest.auth.sources import Authenticated, SourceAuthenticator
from npsloop_ingest.metrics import IngestMetrics
from npsloop_ingest.rejections import (
    BodyTooLarge,
    ClientDisconnected,
    EncodedBody,
    MissingCredentials,
    NotJson,
    rejection_reason,
)
from npsloop_ingest.responses.parsing import parse_responses
from npsloop_shared.cloudevents import JSON_CONTENT_TYPE, SPEC_VERSION
from npsloop_shared.contracts import (
    RESPONSE_RECEIVED_TYPE,
    ResponseShape,
    response_event_id_text,
    response_received_encoder,
)
from npsloop_shared.errors import INTERNAL_ERROR_DETAIL, NpsloopError, error_response
from npsloop_shared.kafka.producer import KafkaProducer, OutgoingRecord
from npsloop_shared.signing import SignedHeaders

log = logging.getLogger(__name__)

PATH: Final = "/v1/responses"

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
RawHeaders = Sequence[tuple[bytes, bytes]]

_SPEC_HEADER: Final = ("ce_specversion", SPEC_VERSION.encode())
_TYPE_HEADER: Final = ("ce_type", RESPONSE_RECEIVED_TYPE.encode())
_CONTENT_TYPE_HEADER: Final = ("content-type", JSON_CONTENT_TYPE.encode())
_JSON: Final = b"application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer as bytes, ready for either ASGI `send` or a Starlette `Response`."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


@dataclass(slots=True)
class PostHeaders:
    """The request headers this endpoint reads, picked from ASGI's raw list in one pass."""

    content_type: bytes | None = None
    content_encoding: bytes | None = None
    content_length: bytes | None = None
    authorization: bytes | None = None
    webhook_id: bytes | None = None
    webhook_timestamp: bytes | None = None
    webhook_signature: bytes | None = None

    @classmethod
    def from_raw(cls, raw: RawHeaders) -> PostHeaders:
        found = cls()
        for name, value in raw:
            if name == b"content-type":
                found.content_type = value
            elif name == b"content-length":
                found.content_length = value
            elif name == b"authorization":
                found.authorization = value
            elif name == b"webhook-id":
                found.webhook_id = value
            elif name == b"webhook-timestamp":
                found.webhook_timestamp = value
            elif name == b"webhook-signature":
                found.webhook_signature = value
            elif name == b"content-encoding":
                found.content_encoding = value
        return found

    @property
    def is_signed(self) -> bool:
        return bool(self.webhook_id or self.webhook_timestamp or self.webhook_signature)

    def signed(self) -> SignedHeaders:
        return SignedHeaders(
            _text(self.webhook_id), _text(self.webhook_timestamp), _text(self.webhook_signature)
        )


class ResponseIntake:
    def __init__(
        self,
        *,
        producer: KafkaProducer,
        authenticator: SourceAuthenticator,
        metrics: IngestMetrics,
        topic: str,
        max_body_bytes: int,
        source_ids: Iterable[str],
    ) -> None:
        self._producer = producer
        self._authenticator = authenticator
        self._metrics = metrics
        self._topic = topic
        self._max_body = max_body_bytes
        self._source_headers = {
            source_id: ("ce_source", f"npsloop/ingest/{source_id}".encode())
            for source_id in source_ids
        }

    async def handle(self, raw_headers: RawHeaders, receive: Receive) -> Reply:
        """Answer one `POST /v1/responses`; never raises for anything the client sent."""
        source_id = None
        try:
            auth, body = await self._authenticate_and_read(
                PostHeaders.from_raw(raw_headers), receive
            )
            source_id = auth.source_id
            reply = await self._accept(auth, body)
        except NpsloopError as error:
            reply = self._rejected(error, source_id)
        except Exception:
            # A bug of ours: the client still gets a problem (never a bare 500 from the server),
            # the log gets the traceback, and nothing was claimed.
            log.exception("POST /v1/responses failed", extra={"source": source_id})
            reply = _problem_reply(NpsloopError(INTERNAL_ERROR_DETAIL))
        self._metrics.request_answered(reply.status)
        return reply

    async def _authenticate_and_read(
        self, headers: PostHeaders, receive: Receive
    ) -> tuple[Authenticated, bytes]:
        self._check_declared_length(headers.content_length)
        if not _is_json(headers.content_type):
            raise NotJson
        if not _is_identity(headers.content_encoding):
            raise EncodedBody
        if headers.authorization is not None:
            auth = self._authenticator.bearer(headers.authorization)
            return auth, await self._read_body(receive)
        if not headers.is_signed:
            raise MissingCredentials
        body = await self._read_body(receive)
        return self._authenticator.signed(headers.signed(), body), body

    async def _accept(self, auth: Authenticated, body: bytes) -> Reply:
        responses = parse_responses(body)
        records, ids = self._events(auth.source_id, responses)
        started = time.perf_counter()
        if len(records) == 1:
            await self._producer.publish_record(records[0])
        else:
            await self._producer.publish_many(records)
        self._metrics.produce_observed(time.perf_counter() - started)
        self._authenticator.accepted(auth)
        self._metrics.responses_accepted(auth.source_id, len(ids))
        return _accepted_reply(ids)

    def _events(
        self, source_id: str, responses: Sequence[ResponseShape]
    ) -> tuple[list[OutgoingRecord], list[str]]:
        """One event per response: CloudEvents binary-mode headers, the `ResponseReceived`
        JSON as value, keyed by account. `ce_id` is deterministic (source, response_id,
        revision), so a retried response gets the same id and consumers keep it once."""
        received_at = datetime.now(UTC)
        # orjson writes the same RFC 3339 text as isoformat(), several times faster.
        time_header = ("ce_time", orjson.dumps(received_at)[1:-1])
        source_header = self._source_headers[source_id]
        encode = response_received_encoder(source=source_id, received_at=received_at)
        topic = self._topic
        records, ids = [], []
        for item in responses:  # kept flat: a batch runs this 500 times
            event_id = response_event_id_text(source_id, item.response_id, item.revision)
            headers = [
                _SPEC_HEADER,
                ("ce_id", event_id.encode()),
                _TYPE_HEADER,
                source_header,
                time_header,
                _CONTENT_TYPE_HEADER,
            ]
            records.append(OutgoingRecord(topic, encode(item), item.account_id.encode(), headers))
            ids.append(event_id)
        return records, ids

    def _check_declared_length(self, content_length: bytes | None) -> None:
        if content_length is not None and (
            not content_length.isdigit() or int(content_length) > self._max_body
        ):
            raise BodyTooLarge(self._max_body)

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, counting streamed bytes too (a chunked body declares no length)."""
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected
        body: bytes = message.get("body", b"")
        if len(body) > self._max_body:
            raise BodyTooLarge(self._max_body)
        if not message.get("more_body", False):
            return body  # the usual case: one message carries the whole body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnected
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise BodyTooLarge(self._max_body)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _rejected(self, error: NpsloopError, source_id: str | None) -> Reply:
        reason = rejection_reason(error)
        self._metrics.request_rejected(reason)
        level = logging.WARNING if error.status >= 500 else logging.INFO
        # Only ids and reasons: never the body, a comment, an email or a credential.
        log.log(
            level,
            "request refused",
            extra={
                "status": error.status,
                "reason": reason,
                "source": source_id,
                "detail": error.detail,  # our own wording, never the request's content
            },
        )
        return _problem_reply(error)


def _problem_reply(error: NpsloopError) -> Reply:
    response = error_response(error, instance=PATH)
    return Reply(response.status_code, bytes(response.body), response.raw_headers)


def _accepted_reply(ids: list[str]) -> Reply:
    body = orjson.dumps({"accepted": len(ids), "ids": ids})
    return Reply(
        202, body, [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    )


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    if content_type == _JSON:
        return True
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == _JSON


def _is_identity(content_encoding: bytes | None) -> bool:
    return content_encoding is None or content_encoding.strip().lower() in (b"", b"identity")


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("latin-1")
