"""The localized, channel-neutral content of an alert message: every line each channel shows.

Values here are still **raw** text (translations, formatted dates, untrusted names and the
comment); each channel escapes them for its medium. Short fields are clipped so a hostile
account or respondent name cannot crowd out the comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from babel.support import Translations

from npsloop_alerts.channels.escaping import plain_text, single_line, truncate
from npsloop_alerts.channels.i18n import format_moment, resolve_locale, translations
from npsloop_alerts.channels.message import ActionKind, ActionLink, AlertMessage
from npsloop_shared.contracts import Bucket, ResponseKind

SHORT_FIELD_CHARS: Final = 200
BUCKET_EMOJI: Final = {Bucket.DETRACTOR: "🔴", Bucket.PASSIVE: "🟡", Bucket.PROMOTER: "🟢"}


@dataclass(frozen=True, slots=True)
class Labels:
    account: str
    score: str
    touchpoint: str
    respondent: str
    deadline: str
    submitted: str
    comment: str
    no_comment: str
    read_more: str
    actions: str


@dataclass(frozen=True, slots=True)
class LabelledAction:
    link: ActionLink
    label: str


@dataclass(frozen=True, slots=True)
class AlertPresentation:
    """What every channel shows, in the recipient's words and timezone."""

    locale: str  # a supported locale, e.g. "pt_BR"
    emoji: str
    title: str  # "Detractor · 3/10"
    subject: str  # "[NPS] Detractor 3/10 — Acme"
    heading: str  # "New detractor response from Acme"
    account: str  # "Acme (retail)"
    touchpoint: str  # "checkout · Transactional"
    respondent: str | None
    deadline: str
    submitted: str
    reference: str  # "Alert a1b2 · revision 2"
    footer: str
    comment: str | None  # raw (controls stripped), untruncated: each medium has its own limit
    full_text_url: str | None
    actions: tuple[LabelledAction, ...]
    labels: Labels


def present(message: AlertMessage, locale: str | None = None) -> AlertPresentation:
    """Localize `message` for `locale` (default: the recipient's own)."""
    return _present(message, resolve_locale(locale or message.locale))


# One alert usually goes out on several channels at once, each rendering the same message;
# presentations are immutable, so the channels share one.
@lru_cache(maxsize=1024)
def _present(message: AlertMessage, resolved: str) -> AlertPresentation:
    catalog = translations(resolved)
    gettext = catalog.gettext
    bucket = _bucket_label(message.bucket, catalog)
    account = _short(message.account_name)
    return AlertPresentation(
        locale=resolved,
        emoji=BUCKET_EMOJI[message.bucket],
        title=f"{bucket} · {message.score}/10",
        subject=gettext("[NPS] %(bucket)s %(score)s/10 from %(account)s")
        % {"bucket": bucket, "score": message.score, "account": account},
        heading=gettext("New response from %(account)s") % {"account": account},
        account=_account_line(message, account),
        touchpoint=_touchpoint_line(message, catalog),
        respondent=_respondent_line(message),
        deadline=_deadline(message, resolved, catalog),
        submitted=format_moment(message.submitted_at, message.zone, resolved),
        reference=gettext("Alert %(alert_id)s · revision %(revision)s")
        % {"alert_id": message.alert_id, "revision": message.revision},
        footer=gettext("You receive this alert because you look after %(account)s.")
        % {"account": account},
        comment=_comment(message.comment),
        full_text_url=message.full_text_url,
        actions=tuple(
            LabelledAction(link, _action_label(link.kind, catalog)) for link in message.actions
        ),
        labels=_labels(catalog),
    )


def _comment(comment: str | None) -> str | None:
    """Control characters and ANSI sequences never reach any medium; blank means no comment."""
    if comment is None:
        return None
    cleaned = plain_text(comment)
    return cleaned if cleaned.strip() else None


def _short(text: str) -> str:
    return truncate(single_line(text), SHORT_FIELD_CHARS)[0]


def _bucket_label(bucket: Bucket, catalog: Translations) -> str:
    labels = {
        Bucket.DETRACTOR: catalog.gettext("Detractor"),
        Bucket.PASSIVE: catalog.gettext("Passive"),
        Bucket.PROMOTER: catalog.gettext("Promoter"),
    }
    return labels[bucket]


def _account_line(message: AlertMessage, account: str) -> str:
    if message.account_segment:
        return f"{account} ({_short(message.account_segment)})"
    return account


def _touchpoint_line(message: AlertMessage, catalog: Translations) -> str:
    kind = (
        catalog.gettext("Transactional")
        if message.kind is ResponseKind.TRANSACTIONAL
        else catalog.gettext("Relational")
    )
    if message.touchpoint:
        return f"{_short(message.touchpoint)} · {kind}"
    return kind


def _respondent_line(message: AlertMessage) -> str | None:
    respondent = message.respondent
    if respondent is None:
        return None
    line = " · ".join(_short(part) for part in (respondent.name, respondent.email) if part)
    if respondent.external_id:
        external = "#" + _short(respondent.external_id)
        line = f"{line} ({external})" if line else external
    return line or None


def _deadline(message: AlertMessage, locale: str, catalog: Translations) -> str:
    if message.sla_deadline is None:
        return catalog.gettext("No deadline")
    return format_moment(message.sla_deadline, message.zone, locale)


def _action_label(kind: ActionKind, catalog: Translations) -> str:
    labels = {
        ActionKind.ACKNOWLEDGE: catalog.gettext("Acknowledge"),
        ActionKind.RESOLVE: catalog.gettext("Resolve"),
        ActionKind.APPROVE: catalog.gettext("Approve closing"),
    }
    return labels[kind]


def _labels(catalog: Translations) -> Labels:
    gettext = catalog.gettext
    return Labels(
        account=gettext("Account"),
        score=gettext("Score"),
        touchpoint=gettext("Touchpoint"),
        respondent=gettext("Respondent"),
        deadline=gettext("SLA deadline"),
        submitted=gettext("Submitted"),
        comment=gettext("Comment"),
        no_comment=gettext("No comment"),
        read_more=gettext("Read the full comment"),
        actions=gettext("Actions"),
    )
