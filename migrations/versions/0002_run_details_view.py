"""View run_details: one row per run with its batch name and duration in seconds.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DURATION_SECONDS = {
    "sqlite": "(julianday(runs.finished_at) - julianday(runs.started_at)) * 86400.0",
    "postgresql": "EXTRACT(EPOCH FROM runs.finished_at - runs.started_at)",
}


def upgrade() -> None:
    duration = DURATION_SECONDS[op.get_bind().dialect.name]
    op.execute(
        f"""
        CREATE VIEW run_details AS
        SELECT runs.id AS run_id, batches.name AS batch, runs.spec_hash, runs.status, runs.attempts,
               runs.created_at, runs.started_at, runs.finished_at, {duration} AS duration_s,
               runs.host, runs.pid, runs.error_type, runs.error_message,
               runs.specification, runs.result_json
        FROM runs JOIN batches ON batches.id = runs.batch_id
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW run_details")
