"""The index of claims also holds each run's status, so that finding the runs a runner still holds reads only those.

Runs keep their claim token once finished, so an index on the token alone made renewing a lease and releasing
claims (``claim_token = ? AND status = 'running'``) read every run the runner ever finished: ever longer as a big
batch went on. The index on ``(claim_token, status)`` goes straight to the running ones.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_runs_claim_token_status"), "runs", ["claim_token", "status"])
    op.drop_index(op.f("ix_runs_claim_token"), table_name="runs")


def downgrade() -> None:
    op.create_index(op.f("ix_runs_claim_token"), "runs", ["claim_token"])
    op.drop_index(op.f("ix_runs_claim_token_status"), table_name="runs")
