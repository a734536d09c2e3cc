"""The index of claims holds only running runs: the runs a runner holds now, not every run there is.

The index on ``(claim_token, status)`` held every run, pending and finished ones too, so registering a run, claiming
it and storing its outcome each changed it. Renewing a lease and releasing claims only ever look for running runs
(``claim_token = ? AND status = 'running'``): a partial index of them serves those lookups, stays as small as the
runs in flight, and is left alone by registering; claiming adds to it and storing removes from it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RUNNING = sa.text("status = 'running'")


def upgrade() -> None:
    op.create_index(
        op.f("ix_runs_running_claim_token"),
        "runs",
        ["claim_token"],
        sqlite_where=RUNNING,
        postgresql_where=RUNNING,
    )
    op.drop_index(op.f("ix_runs_claim_token_status"), table_name="runs")


def downgrade() -> None:
    op.create_index(op.f("ix_runs_claim_token_status"), "runs", ["claim_token", "status"])
    op.drop_index(op.f("ix_runs_running_claim_token"), table_name="runs")
