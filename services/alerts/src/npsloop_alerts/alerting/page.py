"""`GET /alerts/{alert_id}`: the read-only page a message's "read the whole comment" link opens.

No admin token: the signed link is the credential (`links.py`), so whoever received the message
can read the alert — what the message showed, with the comment in full — and nothing else. The
page is the email's HTML (one look for both), escaped by its template; it is never cached, never
indexed, and sends no referrer (the link is the key).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Final

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from npsloop_alerts.alerting.links import PAGE_PATH, AlertLinks
from npsloop_alerts.alerting.models import Alert
from npsloop_alerts.auth import Settings
from npsloop_alerts.channels.email import render_alert_page
from npsloop_alerts.delivery.dispatch import alert_message
from npsloop_alerts.delivery.work import AlertContent
from npsloop_alerts.openapi import problem_responses
from npsloop_shared.db import DbSession
from npsloop_shared.errors import Forbidden, NotFound

router = APIRouter(tags=["alerts"])

PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
}
_ALERT_FIELDS: Final = tuple(field.name for field in dataclasses.fields(AlertContent))
# A BCP 47 tag as the links write it (en, pt-BR, zh-CN); anything else is refused with 422.
_LANGUAGE_TAG: Final = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,3}$"


@router.get(
    f"{PAGE_PATH}/{{alert_id}}",
    response_class=HTMLResponse,
    summary="Read an alert (signed link from a message)",
    description="The target of a message's link to the whole comment. Authorised by the link's "
    "own signature (`exp`, `sig`), not by the admin token; `lang` picks the page's language.",
    responses=problem_responses(403, 404, 422),
)
async def alert_page(
    alert_id: uuid.UUID,
    *,
    settings: Settings,
    session: DbSession,
    exp: Annotated[int, Query(description="Expiry, Unix seconds (signed).")],
    sig: Annotated[str, Query(max_length=128, description="The link's signature.")],
    lang: Annotated[str | None, Query(max_length=35, pattern=_LANGUAGE_TAG)] = None,
) -> HTMLResponse:
    links = AlertLinks.from_settings(settings)
    if links is None or not links.verify(str(alert_id), exp, sig):
        raise Forbidden("This link is not valid or has expired; open a newer message instead.")
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("This alert no longer exists.")
    message = alert_message(
        str(alert.id),
        AlertContent(**{name: getattr(alert, name) for name in _ALERT_FIELDS}),
        locale=lang or "en",
        timezone="UTC",
        full_text_url=None,
    )
    return HTMLResponse(render_alert_page(message), headers=PAGE_HEADERS)
