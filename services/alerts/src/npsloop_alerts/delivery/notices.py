"""The email telling an account's manager that a destination was disabled.

Plain and short, in English: it is an operational notice, not an alert. Every untrusted value
(names, the vendor's reason) is HTML-escaped; the Message-ID is deterministic per notice
delivery, so a retried send is recognisable as the same message.
"""

from __future__ import annotations

import html
import uuid
from typing import Any

from npsloop_alerts.channels import EmailIdentity, RenderedEmail


def render_destination_disabled(
    delivery_id: uuid.UUID, details: dict[str, Any], identity: EmailIdentity
) -> RenderedEmail:
    name = str(details.get("recipient_name") or details.get("recipient_id") or "someone")
    channel = str(details.get("channel") or "a channel")
    reason = str(details.get("reason") or "unknown")
    failures = int(details.get("failures") or 0)
    account = str(details.get("account_name") or details.get("account_id") or "an account")
    subject = f"[npsloop] Alerts to {name} on {channel} are paused"
    lines = [
        f"Alerts for {account} could not reach {name} on {channel}: the last {failures} "
        f"attempts were refused for good ({reason}).",
        "",
        f"npsloop stopped sending to that {channel} destination. Fix the person's "
        f"{channel} settings in the directory, then re-drive the dead deliveries "
        "(POST /v1/deliveries/{id}/redrive or `npsloop-alerts redrive`).",
    ]
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in lines if line)
    return RenderedEmail(
        subject=subject.replace("\r", " ").replace("\n", " ")[:200],
        text="\n".join(lines) + "\n",
        html=f"<!doctype html><html><body>{paragraphs}</body></html>",
        message_id=f"<notice-{delivery_id.hex}@{identity.id_domain}>",
        locale="en",
    )
