"""Alert channels: render an `AlertMessage` for one destination (pure), then send it.

| channel  | destination           | rendered           | provider           | edit |
|----------|-----------------------|--------------------|--------------------|------|
| email    | `EmailDestination`    | `RenderedEmail`    | `EmailProvider`    | no   |
| slack    | `SlackDestination`    | `RenderedSlack`    | `SlackProvider`    | bot mode |
| telegram | `TelegramDestination` | `RenderedTelegram` | `TelegramProvider` | yes  |
| webhook  | `WebhookDestination`  | `RenderedWebhook`  | `WebhookProvider`  | no   |
| console  | `ConsoleDestination`  | `RenderedConsole`  | `ConsoleProvider`  | no   |

Providers receive their clients by injection (an `httpx.AsyncClient`, `SmtpSettings`, a text
stream); the composition root builds them. Errors and receipts: see `channels.base`.
"""

from npsloop_alerts.channels.base import (
    Channel,
    ChannelProvider,
    ConsoleRef,
    DeliveryError,
    DestinationConfigError,
    EditingChannelProvider,
    EmailRef,
    MessageRef,
    PermanentDeliveryError,
    SendReceipt,
    SlackRef,
    TelegramRef,
    TransientDeliveryError,
    WebhookRef,
    parse_message_ref,
)
from npsloop_alerts.channels.console import ConsoleDestination, ConsoleProvider
from npsloop_alerts.channels.email import (
    EmailDestination,
    EmailIdentity,
    EmailProvider,
    SmtpSettings,
    alert_message_id,
)
from npsloop_alerts.channels.message import (
    ActionKind,
    ActionLink,
    AlertMessage,
    InlineImage,
    RenderedConsole,
    RenderedEmail,
    RenderedSlack,
    RenderedTelegram,
    RenderedWebhook,
)
from npsloop_alerts.channels.slack import SlackDestination, SlackProvider
from npsloop_alerts.channels.telegram import TelegramDestination, TelegramProvider
from npsloop_alerts.channels.webhook import WebhookDestination, WebhookProvider

__all__ = [
    "ActionKind",
    "ActionLink",
    "AlertMessage",
    "Channel",
    "ChannelProvider",
    "ConsoleDestination",
    "ConsoleProvider",
    "ConsoleRef",
    "DeliveryError",
    "DestinationConfigError",
    "EditingChannelProvider",
    "EmailDestination",
    "EmailIdentity",
    "EmailProvider",
    "EmailRef",
    "InlineImage",
    "MessageRef",
    "PermanentDeliveryError",
    "RenderedConsole",
    "RenderedEmail",
    "RenderedSlack",
    "RenderedTelegram",
    "RenderedWebhook",
    "SendReceipt",
    "SlackDestination",
    "SlackProvider",
    "SlackRef",
    "SmtpSettings",
    "TelegramDestination",
    "TelegramProvider",
    "TelegramRef",
    "TransientDeliveryError",
    "WebhookDestination",
    "WebhookProvider",
    "WebhookRef",
    "alert_message_id",
    "parse_message_ref",
]
