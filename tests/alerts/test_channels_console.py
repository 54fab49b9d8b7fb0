"""Console channel: a readable summary that cannot drive the operator's terminal."""

from __future__ import annotations

import io

from npsloop_alerts.channels import ConsoleDestination, ConsoleProvider, ConsoleRef
from tests.fakes.samples import ARABIC, CJK, LONG, alert_message


async def test_summary_shows_the_alert_facts() -> None:
    stream = io.StringIO()
    provider = ConsoleProvider(stream)
    destination = ConsoleDestination(label="owner@acme.example via email")
    receipt = await provider.send(provider.render(alert_message(), destination), destination)

    assert receipt.ref == ConsoleRef(sequence=1)
    assert stream.getvalue() == (
        "── 🔴 Detractor · 3/10 → owner@acme.example via email\n"
        "Account: Acme Retail (retail)\n"
        "Touchpoint: checkout · Transactional\n"
        "Respondent: Maria Souza · maria@example.com\n"
        "SLA deadline: Mar 2, 2026, 2:30\u202fPM EST\n"
        "Submitted: Mar 2, 2026, 10:30\u202fAM EST\n"
        "Comment:\n"
        "    Checkout kept failing & support never answered.\n"
        "[Acknowledge] https://npsloop.test/a/a-1/ack?sig=1\n"
        "[Resolve] https://npsloop.test/a/a-1/resolve?sig=2\n"
        "Alert a-1 · revision 0\n"
    )


async def test_escape_sequences_and_controls_are_stripped_and_text_kept() -> None:
    stream = io.StringIO()
    provider = ConsoleProvider(stream)
    comment = f"\x1b[2J\x1b[31mred\x1b[0m \x1b]0;pwned\x07ok\x07\x00\r\nline2 \u202e{ARABIC} {CJK}"
    message = alert_message(comment=comment, account_name="\x1b[5mAcme")
    await provider.send(provider.render(message, ConsoleDestination()), ConsoleDestination())

    output = stream.getvalue()
    assert "\x1b" not in output
    assert "\x07" not in output
    assert "\x00" not in output
    assert "\u202e" not in output
    assert "    red ok\n    line2 " in output
    assert ARABIC in output
    assert CJK in output
    assert "Account: Acme (retail)" in output


async def test_long_comments_are_cut_and_sequence_numbers_increase() -> None:
    stream = io.StringIO()
    provider = ConsoleProvider(stream)
    first = await provider.send(
        provider.render(alert_message(comment=LONG), ConsoleDestination()), ConsoleDestination()
    )
    second = await provider.send(
        provider.render(alert_message(comment=None), ConsoleDestination()), ConsoleDestination()
    )
    assert (first.ref.external_id, second.ref.external_id) == ("console/1", "console/2")
    assert len(stream.getvalue()) < 2_000
    assert "    No comment\n" in stream.getvalue()
