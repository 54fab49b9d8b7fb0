"""Locales for alert messages: gettext catalogs (`locales/<locale>/LC_MESSAGES/alerts.po`, read
with Babel) and Babel's CLDR data for dates, so no translated string lives in Python code."""

from __future__ import annotations

import io
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources
from typing import Final
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

DEFAULT_LOCALE: Final = "en"
SUPPORTED_LOCALES: Final = ("en", "pt_BR", "zh_CN")
CATALOG_DOMAIN: Final = "alerts"
# When only the language matches, this is the variant we have.
_BY_LANGUAGE: Final = {"en": "en", "pt": "pt_BR", "zh": "zh_CN"}


@cache
def resolve_locale(tag: str | None) -> str:
    """The supported locale closest to a BCP 47 tag (`pt-BR`, `pt_PT`, `zh-Hans-CN`, `en-GB`).

    Exact language+territory first, then the language alone, then English.
    """
    if not tag:
        return DEFAULT_LOCALE
    try:
        parsed = Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return DEFAULT_LOCALE
    exact = f"{parsed.language}_{parsed.territory}" if parsed.territory else parsed.language
    if exact in SUPPORTED_LOCALES:
        return exact
    return _BY_LANGUAGE.get(parsed.language, DEFAULT_LOCALE)


def bcp47(locale: str) -> str:
    """`pt_BR` → `pt-BR` (for `Content-Language` and `lang` attributes)."""
    return locale.replace("_", "-")


@cache
def translations(locale: str) -> Translations:
    """The compiled catalog for a supported locale (English returns its msgids unchanged)."""
    if locale not in SUPPORTED_LOCALES:
        raise ValueError(f"unsupported locale {locale!r}; resolve it with resolve_locale() first")
    po_file = resources.files(__package__).joinpath(
        "locales", locale, "LC_MESSAGES", f"{CATALOG_DOMAIN}.po"
    )
    with po_file.open("rb") as handle:
        catalog = read_po(handle, locale=locale, domain=CATALOG_DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=CATALOG_DOMAIN)


def format_moment(moment: datetime, zone: ZoneInfo, locale: str) -> str:
    """A date and time in the recipient's timezone and locale, with the zone's short name:
    `Mar 2, 2026, 12:05 PM EST`, `2 de mar. de 2026 14:05 BRT`, `2026年3月3日 01:05 +0800`."""
    # The pattern stops at minutes (CLDR short times have no seconds), so every moment of one
    # minute reads the same; Babel's formatting is slow and alerts of a busy minute share it.
    return _format_minute(moment.replace(second=0, microsecond=0), zone, locale)


@lru_cache(maxsize=4096)
def _format_minute(minute: datetime, zone: ZoneInfo, locale: str) -> str:
    return format_datetime(
        minute, _moment_pattern(locale), tzinfo=zone, locale=_babel_locale(locale)
    )


@cache
def _babel_locale(locale: str) -> Locale:
    # Parsing a locale reads CLDR data: per message that was ~14% of a chat send's CPU.
    return Locale.parse(locale)


@cache
def _moment_pattern(locale: str) -> str:
    """CLDR's medium date + short time, joined the locale's way, then the zone: one pattern."""
    babel_locale = _babel_locale(locale)
    date_pattern = babel_locale.date_formats["medium"].pattern
    time_pattern = babel_locale.time_formats["short"].pattern
    joined = str(babel_locale.datetime_formats["medium"])
    return joined.replace("{1}", date_pattern).replace("{0}", time_pattern) + " z"
