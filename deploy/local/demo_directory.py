"""A first-run directory for `make run`, so the banner's sample response reaches someone.

On an empty directory (no people yet) the account of the sample response gets an owner with an
email address, who is also the team fallback (alerts for unknown accounts): the sample curl then
ends as an `.eml` in the mail sink. A directory that already has people is left alone, so data
kept in `.data/` across runs is never overwritten. Everything goes through the admin API, as an
operator's own set-up would.
"""

from __future__ import annotations

from typing import Final

import httpx

from deploy.local.banner import SAMPLE_ACCOUNT_ID

DEMO_PERSON_ID: Final = "demo-owner"
DEMO_OWNER: Final = {"name": "Demo Owner", "email": "owner@acme.example", "locale": "en"}
DEMO_ACCOUNT: Final = {"name": "Acme Corp", "segment": "retail", "owner_id": DEMO_PERSON_ID}


class DemoDirectoryError(RuntimeError):
    """The admin API refused or could not be reached; the runner goes on without the demo."""


def ensure_demo_directory(alerts_url: str, admin_token: str) -> str | None:
    """Seed the demo owner, account and team fallback when the directory has no people.

    Returns a line for the banner when it seeded, None when it left the directory alone.
    """
    headers = {"Authorization": f"Bearer {admin_token}"}
    try:
        with httpx.Client(base_url=alerts_url, headers=headers, timeout=10) as client:
            people = client.get("/v1/people", params={"limit": 1})
            people.raise_for_status()
            if people.json()["total"] > 0:
                return None
            client.put(f"/v1/people/{DEMO_PERSON_ID}", json=DEMO_OWNER).raise_for_status()
            client.put(f"/v1/accounts/{SAMPLE_ACCOUNT_ID}", json=DEMO_ACCOUNT).raise_for_status()
            client.put("/v1/team", json={"fallback_person_id": DEMO_PERSON_ID}).raise_for_status()
    except httpx.HTTPError as exc:
        raise DemoDirectoryError(f"could not seed the demo directory: {exc}") from exc
    return (
        f"account {SAMPLE_ACCOUNT_ID} → {DEMO_OWNER['name']} <{DEMO_OWNER['email']}>"
        " (also the team fallback); change it with the admin API"
    )
