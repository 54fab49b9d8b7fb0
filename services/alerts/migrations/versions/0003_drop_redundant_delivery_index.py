"""Drop `ix_deliveries_alert_id`: the unique (alert_id, recipient_id, channel, purpose) index
already serves every lookup by alert, and the cascade from `alerts`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

A delivery row is rewritten twice (claimed, then recorded), and neither update can be HOT (both
change indexed columns), so every index costs a write per update: one fewer is a sixth less
index maintenance on the busiest table.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_alert_id", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_alert_id", "deliveries", ["alert_id"])
