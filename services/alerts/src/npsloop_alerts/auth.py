"""Admin API authentication: one bearer token, `NPSLOOP_ADMIN_TOKEN`, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from npsloop_alerts.settings import AlertsSettings
from npsloop_shared.errors import ServiceUnavailable, Unauthorized

admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="`Authorization: Bearer <NPSLOOP_ADMIN_TOKEN>`",
)


def get_settings(request: Request) -> AlertsSettings:
    """The settings the app was created with (set by `create_app`, not by the lifespan)."""
    settings = request.app.state.settings
    assert isinstance(settings, AlertsSettings)
    return settings


Settings = Annotated[AlertsSettings, Depends(get_settings)]


async def require_admin(
    settings: Settings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    expected = settings.admin_token
    if expected is None:
        raise ServiceUnavailable("The admin API is disabled: NPSLOOP_ADMIN_TOKEN is not set.")
    challenge = {"WWW-Authenticate": 'Bearer realm="npsloop-admin"'}
    if credentials is None:
        raise Unauthorized("Send the admin token as `Authorization: Bearer …`.", headers=challenge)
    presented = credentials.credentials.encode()
    if not hmac.compare_digest(presented, expected.get_secret_value().encode()):
        raise Unauthorized("The admin token is not valid.", headers=challenge)


AdminAuth = Depends(require_admin)
