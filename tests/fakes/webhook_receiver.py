"""A local webhook endpoint (a CRM, say) that verifies Standard Webhooks signatures.

A request with a missing or wrong signature, or a timestamp outside five minutes, gets `401`;
a verified one gets `200` and is kept in `deliveries` (with its `webhook-id`, so tests can check
that retries reuse it). `script(...)` injects 429/5xx/4xx answers or slow ones.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.fakes.server import LocalHttpServer, Request, Response

ENDPOINT = "hook"


@dataclass(frozen=True, slots=True)
class Delivery:
    webhook_id: str
    timestamp: int
    payload: Any


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class FakeWebhookReceiver(LocalHttpServer):
    def __init__(self, *, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret or new_secret()
        self.deliveries: list[Delivery] = []
        self.rejected = 0

    def reset(self) -> None:
        super().reset()
        self.deliveries.clear()
        self.rejected = 0

    def endpoint_url(self, path: str = "/hooks/npsloop") -> str:
        return f"{self.url}{path}"

    def endpoint_of(self, path: str) -> str:
        return ENDPOINT

    async def answer(self, request: Request, body: bytes, endpoint: str) -> Response:
        headers = dict(request.headers)
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.rejected += 1
            return Response.json({"error": str(exc)}, 401)
        self.deliveries.append(
            Delivery(
                webhook_id=headers["webhook-id"],
                timestamp=int(headers["webhook-timestamp"]),
                payload=payload,
            )
        )
        return Response.json({"received": True})
