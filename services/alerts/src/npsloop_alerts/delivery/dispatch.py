"""One attempt: build the message view, render for the channel (pure), send or edit (I/O), and
classify how it ended. Never retries and never sleeps: the loop owns timing.

Errors map to verdicts through their type only (retry policy is data, not `if`s here):
`TransientDeliveryError` and timeouts → transient (with the vendor's retry hint);
`PermanentDeliveryError` → permanent, counted against the destination unless it is our own
configuration (`DestinationConfigError`); a failure to *render* is our bug → permanent, so it
waits, visible and re-drivable, for a fix instead of retrying hot. Anything unexpected while
*sending* is treated as transient: the attempt limit still ends it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

from npsloop_alerts.alerting.links import AlertLinks
from npsloop_alerts.channels import (
    AlertMessage,
    ConsoleDestination,
    DeliveryError,
    DestinationConfigError,
    EmailDestination,
    PermanentDeliveryError,
    SendReceipt,
    SlackDestination,
    TelegramDestination,
    TransientDeliveryError,
    WebhookDestination,
    parse_message_ref,
)
from npsloop_alerts.delivery.channels import ChannelProviders
from npsloop_alerts.delivery.models import DeliveryPurpose
from npsloop_alerts.delivery.notices import render_destination_disabled
from npsloop_alerts.delivery.work import (
    AlertContent,
    ClaimedDelivery,
    Operation,
    SendOutcome,
    Verdict,
)
from npsloop_shared.contracts import Respondent
from npsloop_shared.kafka.dlq import describe_error, error_class_name

SendCall = Callable[[], Awaitable[SendReceipt]]
CHAT_CHANNELS: Final = frozenset({"slack", "telegram"})
RECENT_MESSAGES: Final = 1024


class Dispatcher:
    def __init__(
        self, providers: ChannelProviders, *, links: AlertLinks | None, send_timeout: float
    ) -> None:
        self._providers = providers
        self._links = links  # None: messages carry no link to the alert's page
        self._timeout = send_timeout
        self._recent_messages: dict[tuple[object, ...], tuple[AlertContent, AlertMessage]] = {}

    async def perform(self, delivery: ClaimedDelivery) -> SendOutcome:
        started_at = datetime.now(UTC)
        base = SendOutcome(
            delivery=delivery,
            operation=delivery.operation,
            verdict=Verdict.PERMANENT,
            started_at=started_at,
            rendered_revision=delivery.alert.revision,
        )
        if delivery.destination_disabled:
            return replace(
                base,
                verdict=Verdict.DESTINATION_DISABLED,
                error_class="DestinationDisabled",
                error_reason="destination_disabled",
                error_message="destination disabled after repeated permanent failures",
            )
        try:
            call = self._prepare(delivery)
        except DeliveryError as exc:
            return _failed(base, exc, latency_ms=None)
        except Exception as exc:  # a render bug: dead until fixed and re-driven
            return replace(
                base,
                error_class=error_class_name(exc),
                error_reason="render_failed",
                error_message=describe_error(exc),
            )
        return await self._send(base, call)

    async def _send(self, base: SendOutcome, call: SendCall) -> SendOutcome:
        # Waiting for a turn is not part of the attempt: neither its timeout nor its latency.
        async with self._providers.concurrency[base.delivery.channel]:
            return await self._send_now(base, call)

    async def _send_now(self, base: SendOutcome, call: SendCall) -> SendOutcome:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                receipt = await call()
        except DeliveryError as exc:
            return _failed(base, exc, latency_ms=_since(started))
        except TimeoutError:
            return replace(
                base,
                verdict=Verdict.TRANSIENT,
                latency_ms=_since(started),
                error_class="TimeoutError",
                error_reason="timeout",
                error_message=f"no answer within {self._timeout:g} s",
            )
        except Exception as exc:
            return replace(
                base,
                verdict=Verdict.TRANSIENT,
                latency_ms=_since(started),
                error_class=error_class_name(exc),
                error_reason="unexpected",
                error_message=describe_error(exc),
            )
        return replace(
            base,
            verdict=Verdict.SENT,
            latency_ms=receipt.latency_ms,
            receipt=receipt,
            vendor_status=receipt.vendor_status,
            editable=self._can_edit(base.delivery.channel, receipt),
        )

    def _can_edit(self, channel: str, receipt: SendReceipt) -> bool:
        if channel == "slack":
            return self._providers.slack.can_edit(receipt.ref)
        if channel == "telegram":
            return self._providers.telegram.can_edit(receipt.ref)
        return False

    def _prepare(self, delivery: ClaimedDelivery) -> SendCall:
        """Render now (pure) and return the I/O still to do."""
        if delivery.purpose == DeliveryPurpose.DESTINATION_DISABLED:
            return self._prepare_notice(delivery)
        message = self.message_for(delivery)
        providers = self._providers
        if delivery.channel == "email":
            email = EmailDestination(delivery.destination, delivery.recipient_name)
            rendered_email = providers.email.render(message, email)
            return lambda: providers.email.send(rendered_email, email)
        if delivery.channel in CHAT_CHANNELS:
            return self._prepare_chat(delivery, message)
        if delivery.channel == "webhook":
            if providers.webhook_secret is None:
                raise DestinationConfigError(
                    "NPSLOOP_WEBHOOK_SIGNING_SECRET is not set", reason="no_webhook_secret"
                )
            hook = WebhookDestination(delivery.destination, providers.webhook_secret)
            rendered_hook = providers.webhook.render(message, hook)
            return lambda: providers.webhook.send(rendered_hook, hook)
        console = ConsoleDestination(delivery.recipient_name)
        rendered_console = providers.console.render(message, console)
        return lambda: providers.console.send(rendered_console, console)

    def _prepare_chat(self, delivery: ClaimedDelivery, message: AlertMessage) -> SendCall:
        providers = self._providers
        ref = parse_message_ref(delivery.external_ref) if delivery.external_ref else None
        edit = delivery.operation is Operation.EDIT and ref is not None
        if delivery.channel == "slack":
            slack = _slack_destination(delivery.destination)
            rendered_slack = providers.slack.render(message, slack)
            if edit and ref is not None:
                return lambda: providers.slack.edit(ref, rendered_slack)
            return lambda: providers.slack.send(rendered_slack, slack)
        telegram = TelegramDestination(delivery.destination)
        rendered_telegram = providers.telegram.render(message, telegram)
        if edit and ref is not None:
            return lambda: providers.telegram.edit(ref, rendered_telegram)
        return lambda: providers.telegram.send(rendered_telegram, telegram)

    def _prepare_notice(self, delivery: ClaimedDelivery) -> SendCall:
        email = EmailDestination(delivery.destination, delivery.recipient_name)
        rendered = render_destination_disabled(
            delivery.id, delivery.details or {}, self._providers.identity
        )
        return lambda: self._providers.email.send(rendered, email)

    def message_for(self, delivery: ClaimedDelivery) -> AlertMessage:
        """The channel-neutral view of the alert for this recipient.

        An alert's deliveries (a recipient's email, Slack and Telegram) are usually claimed
        together and read the same view, so recent views are kept, keyed by everything that
        goes into one. Links in a kept view were signed moments earlier: still valid for days.
        """
        key = (delivery.alert_id, delivery.alert.revision, delivery.locale, delivery.timezone)
        recent = self._recent_messages.pop(key, None)
        if recent is not None and recent[0] == delivery.alert:
            message = recent[1]
        else:
            alert_id = str(delivery.alert_id)
            link = self._links.url(alert_id, lang=delivery.locale) if self._links else None
            message = alert_message(
                alert_id,
                delivery.alert,
                locale=delivery.locale,
                timezone=delivery.timezone,
                full_text_url=link,
            )
            if len(self._recent_messages) >= RECENT_MESSAGES:
                del self._recent_messages[next(iter(self._recent_messages))]
        self._recent_messages[key] = (delivery.alert, message)  # most recent last
        return message


def alert_message(
    alert_id: str,
    alert: AlertContent,
    *,
    locale: str,
    timezone: str,
    full_text_url: str | None,
) -> AlertMessage:
    """The channel-neutral view of an alert, for a reader in `locale` and `timezone`."""
    return AlertMessage(
        alert_id=alert_id,
        revision=alert.revision,
        bucket=alert.bucket,
        score=alert.score,
        comment=alert.comment,
        account_id=alert.account_id,
        account_name=alert.account_name,
        account_segment=alert.segment,
        touchpoint=alert.touchpoint,
        kind=alert.kind,
        respondent=Respondent.model_validate(alert.respondent) if alert.respondent else None,
        submitted_at=alert.submitted_at,
        sla_deadline=alert.acknowledge_due_at,
        full_text_url=full_text_url,
        locale=locale,
        timezone=timezone,
    )


def _slack_destination(address: str) -> SlackDestination:
    if address.startswith(("https://", "http://")):
        return SlackDestination(webhook_url=address)
    return SlackDestination(channel=address)


def _failed(base: SendOutcome, exc: DeliveryError, *, latency_ms: float | None) -> SendOutcome:
    transient = isinstance(exc, TransientDeliveryError)
    return replace(
        base,
        verdict=Verdict.TRANSIENT if transient else Verdict.PERMANENT,
        latency_ms=latency_ms,
        vendor_status=exc.vendor_status,
        error_class=type(exc).__name__,
        error_reason=exc.reason,
        error_message=describe_error(exc),
        retry_after=exc.retry_after if isinstance(exc, TransientDeliveryError) else None,
        counts_against_destination=isinstance(exc, PermanentDeliveryError)
        and not isinstance(exc, DestinationConfigError),
    )


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
