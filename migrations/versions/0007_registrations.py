"""What registering specifications knows of each batch: the list its runs are, and who is registering one now.

Adds the table registrations, one row per batch (a row for each batch there already is): the digest of the
specification list whose runs the batch holds exactly (``listed_digest``, with their number, ``listed_count``), so
that registering the same list again reads the batch instead of hashing every specification; and the runner
registering a list now (``registering_*``, until ``registering_until``), so that runners started together on one list
wait for it instead of each hashing and checking the whole list.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registrations",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("listed_digest", sa.String(length=64), nullable=True),
        sa.Column("listed_count", sa.Integer(), nullable=True),
        sa.Column("registering_digest", sa.String(length=64), nullable=True),
        sa.Column("registering_token", sa.String(length=32), nullable=True),
        sa.Column("registering_host", sa.String(length=255), nullable=True),
        sa.Column("registering_node", sa.String(length=255), nullable=True),
        sa.Column("registering_pid", sa.Integer(), nullable=True),
        sa.Column("registering_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_registrations_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_registrations")),
    )
    op.execute("INSERT INTO registrations (batch_id) SELECT id FROM batches")


def downgrade() -> None:
    op.drop_table("registrations")
