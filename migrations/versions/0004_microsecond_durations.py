"""SQLite: run_details.duration_s precise to the microsecond, as on PostgreSQL.

0002 computed it with julianday(), which keeps milliseconds, so runs under a millisecond showed 0.0. SQLite stores
timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text: the whole seconds come from strftime('%s') of the text up to the
seconds, the fraction from the text after them, and the difference is rounded to the microsecond. PostgreSQL's
EXTRACT(EPOCH FROM interval) is already exact, and its view keeps the reader role's grant (migration 0003): nothing
changes there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _whole_seconds(column: str) -> str:
    # Of the text without its fraction: strftime() keeps milliseconds, and would round 59.9999 up to the next second.
    return f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER)"


def _fraction(column: str) -> str:
    return f"CAST(substr({column}, 20) AS REAL)"  # '.ffffff', after 'YYYY-MM-DD HH:MM:SS'


# Whole seconds and fractions are subtracted apart: their sum, some 1.8e9 with six decimals, is at the limit of a
# double's precision.
MICROSECONDS = (
    f"round(({_whole_seconds('runs.finished_at')} - {_whole_seconds('runs.started_at')})"
    f" + ({_fraction('runs.finished_at')} - {_fraction('runs.started_at')}), 6)"
)
MILLISECONDS = "(julianday(runs.finished_at) - julianday(runs.started_at)) * 86400.0"  # 0002's


def _create_view(duration: str) -> None:
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP VIEW run_details")
        _create_view(MICROSECONDS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP VIEW run_details")
        _create_view(MILLISECONDS)
