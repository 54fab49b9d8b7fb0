"""Escaping and truncation of untrusted text, one function per medium.

Every string that came from outside (comments, respondent and account names) passes through
exactly one of these before it is placed into a message. The escapers are per-character maps, so
the length of an escaped prefix is known without escaping the whole text twice; truncation is
done on the raw text with the medium's own way of counting, never by cutting escaped output
(which could split `&amp;` or a tag in half).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Final

from markupsafe import escape as _markupsafe_escape

ELLIPSIS: Final = "…"

# Slack mrkdwn: exactly these three, `&` first (APIS.md). `str.translate` maps each character once,
# so the order question disappears.
_SLACK_MAP: Final[Mapping[int, str]] = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"}
# Telegram HTML parse mode: text nodes need `& < >`; attribute values also `"`.
_TELEGRAM_TEXT_MAP: Final[Mapping[int, str]] = _SLACK_MAP
_TELEGRAM_ATTRIBUTE_MAP: Final[Mapping[int, str]] = {**_SLACK_MAP, ord('"'): "&quot;"}

# ANSI/VT escape sequences: CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL|ESC \`), and the
# two-character escapes. Stripped before control characters so no parameter bytes are left behind.
_ANSI_SEQUENCE: Final = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]              # CSI
    | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?  # OSC, terminated by BEL or ST (or cut off)
    | \x1b[PX^_][^\x1b]*(?:\x1b\\)?       # DCS / SOS / PM / APC strings
    | \x1b[@-Z\\-_]                       # other two-character escapes
    | \x9b[0-?]*[ -/]*[@-~]              # 8-bit CSI
    """,
    re.VERBOSE,
)
# Explicit bidi embeddings/overrides/isolates: in a terminal they can reorder what the operator
# reads ("Trojan Source"). Arabic and Hebrew letters themselves are untouched.
_BIDI_CONTROLS: Final = "\u202a-\u202e\u2066-\u2069"
# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F; `\n` and `\t` are kept.
_CONTROLS: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_AND_BIDI: Final = re.compile(f"[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f{_BIDI_CONTROLS}]")
# Characters that must not end a truncated prefix without what follows them.
_JOINERS: Final = frozenset("\u200d\u034f")


def slack_mrkdwn(text: str) -> str:
    """Slack mrkdwn text: `<!channel>`, `<@U…>` and `<url|label>` become inert literal text."""
    return text.translate(_SLACK_MAP)


def slack_link(url: str, label: str) -> str:
    """A mrkdwn link `<url|label>`; the label is escaped, the URL cannot close the link early."""
    safe_url = slack_mrkdwn(url).replace("|", "%7C")
    return f"<{safe_url}|{slack_mrkdwn(label)}>"


def telegram_html(text: str) -> str:
    """Telegram HTML parse mode text node: `& < >` as entities, nothing else."""
    return text.translate(_TELEGRAM_TEXT_MAP)


def telegram_attribute(text: str) -> str:
    """Telegram HTML attribute value (inside double quotes): `& < > "` as entities."""
    return text.translate(_TELEGRAM_ATTRIBUTE_MAP)


def html_text(text: str) -> str:
    """HTML text or attribute (email bodies outside Jinja's autoescape)."""
    return str(_markupsafe_escape(text))


def plain_text(text: str) -> str:
    """Text for a `text/plain` body: newlines normalised, control characters other than `\\n`/`\\t`
    dropped (a NUL or an escape sequence has no business in mail)."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ANSI_SEQUENCE.sub("", normalised))


def single_line(text: str) -> str:
    """One line of plain text (mail headers, titles): every run of whitespace becomes one space."""
    return " ".join(plain_text(text).split())


def terminal(text: str) -> str:
    """Text safe to print on a terminal: no ANSI sequences, no control or bidi-override characters.

    Newlines and tabs are kept; the caller decides how to indent them.
    """
    return _CONTROLS_AND_BIDI.sub("", _ANSI_SEQUENCE.sub("", text.replace("\r\n", "\n")))


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units: how Telegram measures text (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le")) // 2


def truncate(
    text: str,
    limit: int,
    *,
    measure: Callable[[str], int] = len,
    ellipsis: str = ELLIPSIS,
) -> tuple[str, bool]:
    """The longest prefix of `text` that, with `ellipsis` appended, measures at most `limit`.

    Returns `(text, False)` unchanged when it already fits. Never ends inside a grapheme (a
    combining mark or a joiner stays with the character before it), so CJK, Arabic and Hebrew
    are cut between characters, not through them.
    """
    if measure(text) <= limit:
        return text, False
    budget = limit - measure(ellipsis)
    if budget <= 0:
        return ellipsis[: max(limit, 0)], True
    cut = _prefix_fitting(text, budget, measure)
    return text[:cut].rstrip() + ellipsis, True


def truncate_escaped(
    text: str,
    limit: int,
    escape: Callable[[str], str],
    *,
    ellipsis: str = ELLIPSIS,
) -> tuple[str, bool]:
    """Escape `text` and fit the escaped result in `limit` characters (ellipsis included).

    For media whose limit counts the escaped payload (Slack counts `&lt;` as four characters):
    the raw text is cut, then escaped, so an entity is never split.
    """
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped, False
    prefix, _ = truncate(text, limit, measure=lambda part: len(escape(part)), ellipsis=ellipsis)
    return escape(prefix[: -len(ellipsis)]) + ellipsis, True


def _prefix_fitting(text: str, budget: int, measure: Callable[[str], int]) -> int:
    """Index `cut` such that `measure(text[:cut]) <= budget`, maximal, on a grapheme boundary."""
    used = 0
    cut = 0
    for index, char in enumerate(text):
        cost = measure(char)
        if used + cost > budget:
            break
        used += cost
        cut = index + 1
    return _back_off_to_boundary(text, cut)


def _back_off_to_boundary(text: str, cut: int) -> int:
    while 0 < cut < len(text) and _continues_grapheme(text[cut], text[cut - 1]):
        cut -= 1
    return cut


def _continues_grapheme(next_char: str, previous_char: str) -> bool:
    if previous_char in _JOINERS or next_char in _JOINERS:
        return True
    if unicodedata.combining(next_char):
        return True
    # Variation selectors and emoji modifiers belong to the character before them.
    code = ord(next_char)
    return 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0100 <= code <= 0xE01EF
