"""Directory (people, accounts, team), routing rules with the default set, directory outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

The default rules are data, written out here in full (not imported from application code), so
this migration keeps meaning what it meant when it ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(128)


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def _person_fk(column: str, table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["people.id"], name=f"fk_{table}_{column}_people", ondelete="RESTRICT"
    )


DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "id": "default-cancel-keywords",
        "name": "Cancellation words also reach the manager",
        "description": "A comment mentioning cancelling (English, Portuguese, Chinese) is a churn "
        "signal: the account's manager is alerted too.",
        "priority": 10,
        "match": {"keywords": ["cancel", "cancelar", "取消"]},
        "actions": [{"recipients": ["manager"], "channels": ["all_available"], "mode": "all"}],
    },
    {
        "id": "default-detractor",
        "name": "Detractors reach the owner on every channel",
        "description": "Scores 0-6: the owner (or backup, or team) on every channel they have.",
        "priority": 100,
        "match": {"buckets": ["detractor"]},
        "actions": [{"recipients": ["owner"], "channels": ["all_available"], "mode": "all"}],
    },
    {
        "id": "default-passive",
        "name": "Passives reach the owner by email",
        "description": "Scores 7-8: an email to the owner (or backup, or team).",
        "priority": 110,
        "match": {"buckets": ["passive"]},
        "actions": [{"recipients": ["owner"], "channels": ["email"], "mode": "all"}],
    },
    {
        "id": "default-promoter",
        "name": "Promoters reach the owner and the team wins channel",
        "description": "Scores 9-10: the owner on Slack, else by email; and the team's wins "
        "destination when one is configured (PUT /v1/team).",
        "priority": 120,
        "match": {"buckets": ["promoter"]},
        "actions": [
            {"recipients": ["owner"], "channels": ["slack", "email"], "mode": "first_available"},
            {"recipients": ["team_wins"], "channels": ["all_available"], "mode": "all"},
        ],
    },
]

_EMPTY_MATCH: dict[str, list[str]] = {
    "buckets": [],
    "segments": [],
    "touchpoints": [],
    "kinds": [],
    "keywords": [],
}


def _seed_rules(table: sa.Table) -> None:
    rows = []
    for rule in DEFAULT_RULES:
        actions = [{"respect_quiet_hours": True, **action} for action in rule["actions"]]
        rows.append(
            {
                "id": rule["id"],
                "name": rule["name"],
                "description": rule["description"],
                "priority": rule["priority"],
                "enabled": True,
                "stop_processing": False,
                "match": {**_EMPTY_MATCH, **rule["match"]},
                "actions": actions,
                "version": 1,
            }
        )
    op.bulk_insert(table, rows)


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("slack_webhook_url", sa.String(2048)),
        sa.Column("slack_channel", sa.String(128)),
        sa.Column("telegram_chat_id", sa.String(64)),
        sa.Column("webhook_url", sa.String(2048)),
        sa.Column("locale", sa.String(16), server_default="en", nullable=False),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("quiet_hours_start", sa.Time()),
        sa.Column("quiet_hours_end", sa.Time()),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_people"),
        sa.CheckConstraint(
            "(quiet_hours_start IS NULL) = (quiet_hours_end IS NULL)",
            name="ck_people_quiet_hours_pair",
        ),
    )
    op.create_table(
        "accounts",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("segment", sa.String(64)),
        sa.Column("tier", sa.String(64)),
        sa.Column("locale", sa.String(16), server_default="en", nullable=False),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("owner_id", ID),
        sa.Column("backup_owner_id", ID),
        sa.Column("manager_id", ID),
        sa.Column(
            "attributes",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        _person_fk("owner_id", "accounts"),
        _person_fk("backup_owner_id", "accounts"),
        _person_fk("manager_id", "accounts"),
    )
    for column in ("owner_id", "backup_owner_id", "manager_id"):
        op.create_index(f"ix_accounts_{column}", "accounts", [column])

    team = op.create_table(
        "team",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("fallback_person_id", ID),
        sa.Column("wins_person_id", ID),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_team"),
        sa.CheckConstraint("id = 1", name="ck_team_singleton"),
        _person_fk("fallback_person_id", "team"),
        _person_fk("wins_person_id", "team"),
    )
    op.bulk_insert(team, [{"id": 1}])

    op.create_table(
        "directory_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", ID, nullable=False),
        sa.Column("value", sa.LargeBinary()),
        sa.Column(
            "headers", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_directory_outbox"),
    )
    op.create_index(
        "ix_directory_outbox_pending",
        "directory_outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )

    rules = op.create_table(
        "routing_rules",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("stop_processing", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("match", postgresql.JSONB(), nullable=False),
        sa.Column("actions", postgresql.JSONB(), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_routing_rules"),
    )
    op.create_index("ix_routing_rules_priority_id", "routing_rules", ["priority", "id"])
    _seed_rules(rules)


def downgrade() -> None:
    op.drop_table("routing_rules")
    op.drop_table("directory_outbox")
    op.drop_table("team")
    op.drop_table("accounts")
    op.drop_table("people")
