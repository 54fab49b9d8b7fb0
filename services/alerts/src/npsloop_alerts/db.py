"""The declarative base every alerts feature's models use.

The naming convention makes constraint names deterministic, so migrations can refer to them
(`op.drop_constraint("fk_accounts_owner_id_people", ...)`) and never depend on PostgreSQL's
generated names.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampedMixin:
    """`created_at` / `updated_at` set by the database clock (one clock for every replica).

    `eager_defaults` reads them back with RETURNING, so they are loaded after a flush (async
    sessions cannot lazy-load an expired attribute).
    """

    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - read by the declarative scan

    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
