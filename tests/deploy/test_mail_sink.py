"""The local mail sink is a real SMTP server that keeps each message as an .eml file."""

from __future__ import annotations

import email
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest

from deploy.local.mail_sink import start_mail_sink
from deploy.local.ports import free_port


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    folder = tmp_path / "mail"
    controller = start_mail_sink(folder, port)
    yield port, folder
    controller.stop()


def alert_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "npsloop@example.test"
    message["To"] = "owner@example.test"
    message["Subject"] = "Detractor: acme scored 3"
    message.set_content("plain body")
    message.add_alternative("<p>html body</p>", subtype="html")
    return message


def test_each_accepted_message_is_saved_as_an_eml_file(sink: tuple[int, Path]) -> None:
    port, folder = sink

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(alert_message())
        client.send_message(alert_message())

    saved = sorted(folder.glob("*.eml"))
    assert len(saved) == 2
    parsed = email.message_from_bytes(saved[0].read_bytes(), policy=default_policy)
    assert parsed["Subject"] == "Detractor: acme scored 3"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert list(folder.glob("*.partial")) == []
