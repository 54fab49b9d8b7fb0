"""Sample `AlertMessage`s and hostile comments for channel tests (and the delivery loop's)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from npsloop_alerts.channels import ActionKind, ActionLink, AlertMessage

SUBMITTED_AT: Final = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
DEADLINE: Final = datetime(2026, 3, 2, 19, 30, tzinfo=UTC)
FULL_TEXT_URL: Final = "https://npsloop.test/alerts/a-1/comment?sig=abc&exp=1"

PINGS: Final = "<!channel> <!here> <!everyone> <@U024BE7LH> <#C123|general> <!subteam^S1|ops>"
SCRIPT: Final = "<script>alert('x')</script><img src=x onerror=alert(1)>"
TELEGRAM_MARKUP: Final = '<b>bold</b> <a href="https://evil.test">click</a> &amp; &lt; & < >'
ARABIC: Final = "الخدمة سيئة جدا، أريد إلغاء الاشتراك"
HEBREW: Final = "השירות היה גרוע, אני רוצה לבטל"
CJK: Final = "服务太差了，我要取消订阅。サービスが悪い。서비스가 나빠요."
LONG: Final = ("A very long complaint with <tags> & entities. " * 250)[:10_000]
HOSTILE_COMMENTS: Final = {
    "pings": PINGS,
    "script": SCRIPT,
    "telegram_markup": TELEGRAM_MARKUP,
    "rtl": f"{ARABIC}\n{HEBREW}",
    "cjk": CJK,
    "long": LONG,
}


def alert_message(**overrides: Any) -> AlertMessage:
    """A detractor alert with every field set; override what a test is about."""
    fields: dict[str, Any] = {
        "alert_id": "a-1",
        "revision": 0,
        "bucket": "detractor",
        "score": 3,
        "comment": "Checkout kept failing & support never answered.",
        "account_id": "acc-42",
        "account_name": "Acme Retail",
        "account_segment": "retail",
        "touchpoint": "checkout",
        "kind": "transactional",
        "respondent": {"name": "Maria Souza", "email": "maria@example.com"},
        "submitted_at": SUBMITTED_AT,
        "sla_deadline": DEADLINE,
        "full_text_url": FULL_TEXT_URL,
        "actions": (
            ActionLink(
                kind=ActionKind.ACKNOWLEDGE,
                url="https://npsloop.test/a/a-1/ack?sig=1",
                callback_key="ack:a-1",
            ),
            ActionLink(kind=ActionKind.RESOLVE, url="https://npsloop.test/a/a-1/resolve?sig=2"),
        ),
        "locale": "en",
        "timezone": "America/New_York",
    }
    fields.update(overrides)
    return AlertMessage.model_validate(fields)
