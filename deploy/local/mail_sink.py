"""A real SMTP server (aiosmtpd) for local runs: every message it accepts becomes an ``.eml`` file.

Open the files with any mail client to see exactly what a recipient would get.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

ACCEPTED = "250 Message accepted for delivery"


class MailFolder:
    """aiosmtpd handler that writes each message, exactly as received, into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook name)
        raw: bytes = envelope.original_content or envelope.content
        self.save(raw)
        return ACCEPTED

    def save(self, raw: bytes) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        # Written aside, then renamed: whoever watches the folder never sees half a message.
        partial = target.with_suffix(".partial")
        partial.write_bytes(raw)
        partial.rename(target)
        return target


def start_mail_sink(folder: Path, port: int, host: str = "127.0.0.1") -> Controller:
    """Starts the SMTP server on its own thread; call ``.stop()`` on the result to end it."""
    controller = Controller(MailFolder(folder), hostname=host, port=port)
    controller.start()
    return controller
