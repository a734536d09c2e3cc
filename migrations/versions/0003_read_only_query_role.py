"""PostgreSQL: the role smallab_db_reader and the function smallab_db_read_only_query, which `smallab-db query` runs
statements in (see smallab_db/postgres_reader.py). Nothing on SQLite.

A user who may not create roles still gets the rest of the schema: the upgrade then leaves both out with a warning,
and `smallab-db migrate`, run later by a user who may, installs them. The downgrade keeps the role, which other
databases of the cluster may use.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from smallab_db import postgres_reader

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        postgres_reader.install(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        postgres_reader.uninstall(op.get_bind())
