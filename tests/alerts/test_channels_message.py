"""AlertMessage validation, locales and catalogs, the channel-neutral presentation, receipts."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from pydantic import ValidationError

from npsloop_alerts.channels import (
    Channel,
    ChannelProvider,
    ConsoleDestination,
    ConsoleProvider,
    ConsoleRef,
    EditingChannelProvider,
    EmailDestination,
    EmailIdentity,
    EmailProvider,
    EmailRef,
    RenderedConsole,
    RenderedEmail,
    RenderedSlack,
    RenderedTelegram,
    RenderedWebhook,
    SendReceipt,
    SlackDestination,
    SlackProvider,
    SlackRef,
    SmtpSettings,
    TelegramDestination,
    TelegramProvider,
    TelegramRef,
    WebhookDestination,
    WebhookProvider,
    WebhookRef,
    parse_message_ref,
)
from npsloop_alerts.channels.i18n import (
    SUPPORTED_LOCALES,
    format_moment,
    resolve_locale,
    translations,
)
from npsloop_alerts.channels.presentation import present
from tests.fakes.samples import alert_message

CHANNELS_DIR = Path(str(resources.files("npsloop_alerts.channels")))


def test_bucket_must_match_score() -> None:
    with pytest.raises(ValidationError, match="is a detractor"):
        alert_message(bucket="promoter", score=3)


def test_times_must_be_timezone_aware() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        alert_message(submitted_at=datetime(2026, 3, 2, 12, 0))


def test_timezone_must_exist() -> None:
    with pytest.raises(ValidationError, match="unknown IANA timezone"):
        alert_message(timezone="Mars/Olympus_Mons")


def test_callback_key_is_at_most_64_bytes() -> None:
    action = {"kind": "acknowledge", "url": "https://x.test/a", "callback_key": "k" * 65}
    with pytest.raises(ValidationError, match="64 bytes"):
        alert_message(actions=[action])


def test_links_must_be_http_urls() -> None:
    with pytest.raises(ValidationError, match="http"):
        alert_message(full_text_url="javascript:alert(1)")


def test_alert_id_must_be_a_plain_token() -> None:
    with pytest.raises(ValidationError):
        alert_message(alert_id="a@b>")


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("pt-BR", "pt_BR"),
        ("pt_BR", "pt_BR"),
        ("pt-PT", "pt_BR"),
        ("pt", "pt_BR"),
        ("zh-CN", "zh_CN"),
        ("zh-Hans-CN", "zh_CN"),
        ("zh", "zh_CN"),
        ("en-GB", "en"),
        ("de-DE", "en"),
        ("not a locale", "en"),
        (None, "en"),
    ],
)
def test_resolve_locale(tag: str | None, expected: str) -> None:
    assert resolve_locale(tag) == expected


def _used_msgids() -> set[str]:
    method_map = [("**.py", "python"), ("**/templates/**.j2", "jinja2.ext:babel_extract")]
    options = {"**/templates/**.j2": {"extensions": "jinja2.ext.i18n"}}
    found = extract_from_dir(str(CHANNELS_DIR), method_map, options)
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


def test_every_used_string_is_translated_in_every_catalog() -> None:
    used = _used_msgids()
    assert "Read the full comment" in used
    assert "Sent automatically by npsloop; replies to this address are not read." in used
    for locale in SUPPORTED_LOCALES:
        path = CHANNELS_DIR / "locales" / locale / "LC_MESSAGES" / "alerts.po"
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=locale)
        present_ids = {message.id for message in catalog if message.id}
        assert used <= present_ids, f"{locale} misses {sorted(used - present_ids)}"
        if locale != "en":
            untranslated = [message.id for message in catalog if message.id and not message.string]
            assert untranslated == [], f"{locale} leaves {untranslated} untranslated"
        # Babel checks python-format placeholders of every translation.
        problems = [(message.id, errors) for message, errors in catalog.check() if errors]
        assert problems == []


def test_translations_are_loaded_from_the_catalogs() -> None:
    assert translations("pt_BR").gettext("Detractor") == "Detrator"
    assert translations("zh_CN").gettext("Detractor") == "贬损者"
    assert translations("en").gettext("Detractor") == "Detractor"


def test_deadline_is_shown_in_the_recipients_timezone_and_locale() -> None:
    message = alert_message(locale="pt-BR", timezone="America/Sao_Paulo")
    presentation = present(message)
    # 19:30 UTC is 16:30 in São Paulo (UTC-3, no DST in 2026).
    assert presentation.deadline == "2 de mar. de 2026 16:30 BRT"
    assert presentation.labels.deadline == "Prazo do SLA"
    assert presentation.title == "Detrator · 3/10"


def test_locale_argument_overrides_the_recipients() -> None:
    presentation = present(alert_message(locale="pt-BR", timezone="Asia/Shanghai"), "zh-CN")
    assert presentation.title == "贬损者 · 3/10"
    assert presentation.deadline.startswith("2026年3月3日 03:30")


def test_no_deadline_is_said_in_words() -> None:
    assert present(alert_message(sla_deadline=None)).deadline == "No deadline"


def test_blank_comment_counts_as_no_comment_and_controls_are_stripped() -> None:
    assert present(alert_message(comment=" \n\t ")).comment is None
    assert present(alert_message(comment="ok\x1b[31m\x00!")).comment == "ok!"


def test_long_names_are_clipped_so_the_comment_keeps_its_room() -> None:
    presentation = present(alert_message(account_name="N" * 500, account_segment=None))
    assert len(presentation.account) == 200


def test_message_refs_round_trip_through_json() -> None:
    refs = [
        EmailRef(message_id="<alert-a.b@npsloop.test>"),
        SlackRef(channel="C1", ts="1.000001"),
        SlackRef(),
        TelegramRef(chat_id="-1001", message_id=7),
        WebhookRef(webhook_id="msg_1"),
        ConsoleRef(sequence=3),
    ]
    for ref in refs:
        assert parse_message_ref(ref.model_dump()) == ref
    assert [ref.editable for ref in refs] == [False, True, False, True, False, False]
    assert refs[1].external_id == "C1/1.000001"


def test_receipt_serialises_with_its_ref() -> None:
    receipt = SendReceipt(
        channel=Channel.TELEGRAM,
        ref=TelegramRef(chat_id="5", message_id=9),
        latency_ms=12.5,
        vendor_status=200,
    )
    assert SendReceipt.model_validate_json(receipt.model_dump_json()) == receipt
    assert receipt.ref.external_id == "5/9"


async def test_providers_satisfy_the_channel_protocols() -> None:
    """mypy checks these assignments; at run time each provider names its channel."""
    async with httpx.AsyncClient() as client:
        email_provider: ChannelProvider[EmailDestination, RenderedEmail] = EmailProvider(
            SmtpSettings.from_url("smtp://127.0.0.1:25"), EmailIdentity("a@npsloop.example")
        )
        slack: EditingChannelProvider[SlackDestination, RenderedSlack] = SlackProvider(client)
        telegram: EditingChannelProvider[TelegramDestination, RenderedTelegram] = TelegramProvider(
            client, bot_token=None
        )
        webhook: ChannelProvider[WebhookDestination, RenderedWebhook] = WebhookProvider(client)
        console: ChannelProvider[ConsoleDestination, RenderedConsole] = ConsoleProvider(
            io.StringIO()
        )
        channels = [p.channel for p in (email_provider, slack, telegram, webhook, console)]
    assert channels == [
        Channel.EMAIL,
        Channel.SLACK,
        Channel.TELEGRAM,
        Channel.WEBHOOK,
        Channel.CONSOLE,
    ]


def test_moments_of_one_minute_read_the_same_and_the_next_minute_does_not() -> None:
    zone = ZoneInfo("America/New_York")
    start = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
    assert format_moment(start, zone, "en") == "Mar 2, 2026, 10:30\u202fAM EST"
    assert format_moment(start.replace(second=59, microsecond=999_999), zone, "en") == (
        format_moment(start, zone, "en")
    )
    assert format_moment(start.replace(minute=31), zone, "en").endswith("10:31\u202fAM EST")


def test_the_zone_name_follows_a_daylight_saving_change() -> None:
    # New York springs forward at 07:00 UTC on 8 March 2026: 01:59 EST, then 03:00 EDT.
    zone = ZoneInfo("America/New_York")
    before = datetime(2026, 3, 8, 6, 59, 30, tzinfo=UTC)
    after = datetime(2026, 3, 8, 7, 0, 0, tzinfo=UTC)
    assert format_moment(before, zone, "en").endswith("1:59\u202fAM EST")
    assert format_moment(after, zone, "en").endswith("3:00\u202fAM EDT")


def test_presentations_follow_the_message_they_were_made_from() -> None:
    first = present(alert_message(account_name="Acme Retail"))
    again = present(alert_message(account_name="Acme Retail"))
    renamed = present(alert_message(account_name="Globex"))
    assert again == first
    assert "Globex" in renamed.heading
    assert "Acme Retail" in first.heading
