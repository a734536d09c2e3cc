"""Checkpoints of runs in progress, per-run progress, and the run's output: what smallab 2.x experiments need.

Adds the table checkpoints (the pickled states of checkpointed runs, removed when a run completes), the columns
runs.progress and runs.progress_total (the latest ``(progress, total)`` a checkpointed run reported) and runs.output
(the tail of the run's log, at most about 1 MB, saying so when it was cut), and appends the three columns to the view
run_details.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As migration 0004 left it: on SQLite, whole seconds and fractions of the stored text subtracted apart, to the
# microsecond.
DURATION_SECONDS = {
    "sqlite": (
        "round((CAST(strftime('%s', substr(runs.finished_at, 1, 19)) AS INTEGER)"
        " - CAST(strftime('%s', substr(runs.started_at, 1, 19)) AS INTEGER))"
        " + (CAST(substr(runs.finished_at, 20) AS REAL) - CAST(substr(runs.started_at, 20) AS REAL)), 6)"
    ),
    "postgresql": "EXTRACT(EPOCH FROM runs.finished_at - runs.started_at)",
}
BEFORE_COLUMNS = """
    SELECT runs.id AS run_id, batches.name AS batch, runs.spec_hash, runs.status, runs.attempts,
           runs.created_at, runs.started_at, runs.finished_at, {duration} AS duration_s,
           runs.host, runs.pid, runs.error_type, runs.error_message,
           runs.specification, runs.result_json{added}
    FROM runs JOIN batches ON batches.id = runs.batch_id
"""
ADDED_COLUMNS = ", runs.progress, runs.progress_total, runs.output"


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_checkpoints_run_id_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
    )
    op.create_index(op.f("ix_checkpoints_run_id_id"), "checkpoints", ["run_id", "id"])
    op.add_column("runs", sa.Column("progress", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("progress_total", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("output", sa.Text(), nullable=True))
    _create_view(ADDED_COLUMNS)


def downgrade() -> None:
    op.execute("DROP VIEW run_details")
    op.drop_index(op.f("ix_checkpoints_run_id_id"), table_name="checkpoints")
    op.drop_table("checkpoints")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("output")
        runs.drop_column("progress_total")
        runs.drop_column("progress")
    _create_view("")
    if op.get_bind().dialect.name == "postgresql":
        _grant_view_to_reader()


def _create_view(added: str) -> None:
    """(Re)create run_details; PostgreSQL replaces it in place, which keeps its grants (columns are only appended)."""
    dialect = op.get_bind().dialect.name
    select = BEFORE_COLUMNS.format(duration=DURATION_SECONDS[dialect], added=added)
    if dialect == "postgresql":
        op.execute(f"CREATE OR REPLACE VIEW run_details AS {select}")
    else:
        op.execute("DROP VIEW IF EXISTS run_details")
        op.execute(f"CREATE VIEW run_details AS {select}")


def _grant_view_to_reader() -> None:
    """Give the re-created view back to the read-only query role, where it exists (see migration 0003)."""
    op.execute(
        "DO $$ BEGIN IF to_regrole('smallab_db_reader') IS NOT NULL THEN "
        "GRANT SELECT ON run_details TO smallab_db_reader; END IF; END $$"
    )
