"""The console channel for the local runner: one readable, terminal-safe block per alert."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final, TextIO

from npsloop_alerts.channels.base import Channel, ConsoleRef, MessageRef, SendReceipt, Stopwatch
from npsloop_alerts.channels.escaping import terminal, truncate
from npsloop_alerts.channels.message import AlertMessage, RenderedConsole
from npsloop_alerts.channels.presentation import present

CONSOLE_COMMENT_CHARS: Final = 1_000
_INDENT: Final = "    "


@dataclass(frozen=True, slots=True)
class ConsoleDestination:
    """Who the alert would have gone to (shown in the header line)."""

    label: str = "console"


def render_console(
    message: AlertMessage, destination: ConsoleDestination, locale: str | None = None
) -> RenderedConsole:
    """Every untrusted string passes `escaping.terminal`: no ANSI sequences, no controls."""
    presentation = present(message, locale)
    labels = presentation.labels
    lines = [
        f"── {terminal(presentation.emoji)} {terminal(presentation.title)} → "
        f"{terminal(destination.label)}",
        f"{labels.account}: {terminal(presentation.account)}",
        f"{labels.touchpoint}: {terminal(presentation.touchpoint)}",
    ]
    if presentation.respondent:
        lines.append(f"{labels.respondent}: {terminal(presentation.respondent)}")
    lines += [
        f"{labels.deadline}: {presentation.deadline}",
        f"{labels.submitted}: {presentation.submitted}",
        f"{labels.comment}:",
        _indented_comment(presentation.comment, labels.no_comment),
        *(f"[{action.label}] {action.link.url}" for action in presentation.actions),
        presentation.reference,
    ]
    return RenderedConsole(text="\n".join(lines) + "\n")


def _indented_comment(comment: str | None, no_comment: str) -> str:
    if comment is None:
        return _INDENT + no_comment
    shortened, _ = truncate(terminal(comment).expandtabs(4), CONSOLE_COMMENT_CHARS)
    return "\n".join(_INDENT + line for line in shortened.splitlines())


class ConsoleProvider:
    """`ChannelProvider[ConsoleDestination, RenderedConsole]` writing to an injected stream."""

    channel: Final = Channel.CONSOLE

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._sequence = itertools.count(1)

    def render(
        self, message: AlertMessage, destination: ConsoleDestination, locale: str | None = None
    ) -> RenderedConsole:
        return render_console(message, destination, locale)

    async def send(self, rendered: RenderedConsole, destination: ConsoleDestination) -> SendReceipt:
        watch = Stopwatch()
        self._stream.write(rendered.text)
        self._stream.flush()
        return SendReceipt(
            channel=Channel.CONSOLE,
            ref=ConsoleRef(sequence=next(self._sequence)),
            latency_ms=watch.elapsed_ms,
        )

    def can_edit(self, ref: MessageRef) -> bool:
        return False
