"""The alert email's bytes, read back by the standard library's parser (as a mail client would)."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest

from npsloop_alerts.channels.message import InlineImage
from npsloop_alerts.channels.mime import HeaderInjection, alert_email, header_line
from tests.fakes.samples import ARABIC, CJK, HEBREW

HEADERS = [("From", "npsloop <alerts@npsloop.example>"), ("To", "owner@acme.example")]


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def all_defects(message: EmailMessage) -> list[object]:
    return [defect for part in message.walk() for defect in part.defects]


@pytest.mark.parametrize(
    "subject",
    [
        "Detractor 3/10 — Açaí Ltda.",
        f"Detractor — {CJK}",
        f"Detractor — {ARABIC} {HEBREW}",
        "Detractor " + " ".join(["word"] * 60),  # long ASCII: folded
        "Detractor " + "取消" * 60,  # long CJK: several encoded words
    ],
    ids=["latin", "cjk", "rtl", "long-ascii", "long-cjk"],
)
def test_subjects_round_trip_and_lines_stay_short(subject: str) -> None:
    raw = alert_email(subject=subject, headers=HEADERS, text="t", html="<p>h</p>")

    parsed = parse(raw)
    assert parsed["Subject"] == subject
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert head.isascii()
    assert all_defects(parsed) == []


def test_a_header_value_spanning_lines_is_refused() -> None:
    with pytest.raises(HeaderInjection):
        header_line("Subject", "Hi\r\nBcc: everyone@example.com", unstructured=True)
    with pytest.raises(HeaderInjection):
        header_line("To", "a@example.com\nBcc: b@example.com")


def test_bodies_are_quoted_printable_with_short_crlf_lines_and_read_back_exactly() -> None:
    text = f"Line one\n.starts with a dot\n{CJK * 40}\ntrailing spaces   \n{'x' * 300}"
    html = f"<p>{ARABIC}</p><p>{'y' * 300}</p>"

    raw = alert_email(subject="s", headers=HEADERS, text=text, html=html)

    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = parse(raw)
    assert parsed.get_content_type() == "multipart/alternative"
    plain = parsed.get_body(preferencelist=("plain",))
    rich = parsed.get_body(preferencelist=("html",))
    assert plain is not None
    assert rich is not None
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == text
    assert rich.get_content().replace("\r\n", "\n").rstrip("\n") == html
    assert all_defects(parsed) == []


def test_inline_images_go_with_the_html_in_multipart_related() -> None:
    image = InlineImage(content_id="logo@npsloop.example", data=bytes(range(256)) * 3)

    parsed = parse(
        alert_email(
            subject="s", headers=HEADERS, text="t", html="<img src=cid:x>", inline_images=[image]
        )
    )

    plain, related = parsed.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, picture = related.iter_parts()
    assert html.get_content_type() == "text/html"
    assert picture.get_content_type() == "image/png"
    assert picture["Content-ID"] == "<logo@npsloop.example>"
    assert picture.get_content_disposition() == "inline"
    assert picture.get_content() == image.data
    assert all_defects(parsed) == []


def test_the_boundary_never_occurs_in_the_content() -> None:
    text = "\n".join(f"--=_npsloop_{n:024x}" for n in range(50))

    parsed = parse(alert_email(subject="s", headers=HEADERS, text=text, html="<p/>"))

    plain = parsed.get_body(preferencelist=("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == text
