"""escaping.py: one escaper per medium, and truncation that never splits a character or entity."""

from __future__ import annotations

import random

import pytest

from npsloop_alerts.channels import escaping
from tests.fakes.samples import ARABIC, CJK, HEBREW
from tests.fakes.telegram_api import parse_html


def test_slack_escapes_exactly_ampersand_and_angle_brackets() -> None:
    assert escaping.slack_mrkdwn("<!channel> & <@U1> *bold* _i_ \"q\" 'a'") == (
        "&lt;!channel&gt; &amp; &lt;@U1&gt; *bold* _i_ \"q\" 'a'"
    )


def test_slack_escapes_an_existing_entity_again_so_it_shows_literally() -> None:
    assert escaping.slack_mrkdwn("&lt;!here&gt;") == "&amp;lt;!here&amp;gt;"


def test_slack_link_cannot_be_closed_early_by_its_url_or_label() -> None:
    link = escaping.slack_link("https://x.test/a?b=1&c=|<!channel>", "read <!here> | more")
    assert link == "<https://x.test/a?b=1&amp;c=%7C&lt;!channel&gt;|read &lt;!here&gt; | more>"
    assert link.count("<") == 1
    assert link.count(">") == 1


def test_telegram_text_and_attribute_escaping() -> None:
    assert escaping.telegram_html('<b>"x"</b> & y') == '&lt;b&gt;"x"&lt;/b&gt; &amp; y'
    assert escaping.telegram_attribute('a"b<c>&') == "a&quot;b&lt;c&gt;&amp;"


def test_telegram_escaped_text_parses_back_to_the_original() -> None:
    hostile = '<b>x</b> &amp; & < > "q" <script>' + ARABIC + CJK
    assert parse_html(escaping.telegram_html(hostile)) == hostile


def test_html_text_escapes_quotes_too() -> None:
    assert escaping.html_text('<a href="x">\'</a>&') == (
        "&lt;a href=&#34;x&#34;&gt;&#39;&lt;/a&gt;&amp;"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b]0;title\x07text", "text"),
        ("\x1b]8;;https://evil.test\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("bell\x07 nul\x00 del\x7f c1\x9b31m", "bell nul del c1"),
        ("keep\nnew\tlines", "keep\nnew\tlines"),
        ("crlf\r\nline", "crlf\nline"),
        ("over\u202eride\u2066iso\u2069", "overrideiso"),
        (f"{ARABIC}\n{HEBREW}\n{CJK}", f"{ARABIC}\n{HEBREW}\n{CJK}"),
    ],
)
def test_terminal_strips_escape_sequences_controls_and_bidi_overrides(
    raw: str, expected: str
) -> None:
    assert escaping.terminal(raw) == expected


def test_plain_text_keeps_bidi_marks_and_drops_controls() -> None:
    assert escaping.plain_text("a\u202eb\x00c\r\nd\re") == "a\u202ebc\nd\ne"


def test_single_line_collapses_whitespace() -> None:
    assert escaping.single_line("  Acme\r\n\tCorp \x00 ") == "Acme Corp"


def test_truncate_leaves_text_that_fits() -> None:
    assert escaping.truncate("short", 5) == ("short", False)


def test_truncate_respects_limit_and_marks_the_cut() -> None:
    text, cut = escaping.truncate("abcdefghij", 6)
    assert (text, cut) == ("abcde…", True)


def test_truncate_keeps_combining_marks_with_their_letter() -> None:
    text, cut = escaping.truncate("e\u0301" * 10, 6)
    assert cut
    assert len(text) <= 6
    assert text.removesuffix("…") == "e\u0301" * 2


def test_truncate_keeps_cjk_and_rtl_characters_whole() -> None:
    for sample in (CJK * 10, ARABIC * 10, HEBREW * 10):
        text, cut = escaping.truncate(sample, 25)
        assert cut
        assert sample.startswith(text.removesuffix("…").rstrip())
        assert len(text) <= 25


def test_truncate_by_utf16_counts_astral_characters_twice() -> None:
    text, cut = escaping.truncate("😀" * 10, 7, measure=escaping.utf16_length)
    assert cut
    assert text == "😀😀😀…"
    assert escaping.utf16_length(text) <= 7


def test_truncate_does_not_split_an_emoji_zwj_sequence() -> None:
    family = "👩\u200d👩\u200d👧"
    text, _ = escaping.truncate(family * 3, 5, measure=escaping.utf16_length)
    assert "\u200d…" not in text
    assert not text.removesuffix("…").endswith("\u200d")


def test_truncate_escaped_never_splits_an_entity_and_fits_the_limit() -> None:
    rng = random.Random(7)
    alphabet = "ab<>&  日本"
    for _ in range(300):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        limit = rng.randint(2, 60)
        escaped, cut = escaping.truncate_escaped(raw, limit, escaping.slack_mrkdwn)
        assert len(escaped) <= limit
        body = escaped.removesuffix("…") if cut else escaped
        # Undoing the escaping gives back a prefix of the raw text: no half entity survived.
        unescaped = body.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        assert raw.startswith(unescaped.rstrip()) or raw.rstrip().startswith(unescaped.rstrip())
        assert escaping.slack_mrkdwn(unescaped) == body
