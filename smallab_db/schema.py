"""The tables, as SQLAlchemy Core metadata. The Alembic migrations build them; a test checks both agree."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

VERSION_TABLE = "smallab_db_version"

PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
STATUSES = (PENDING, RUNNING, COMPLETED, FAILED)
_IS_RUNNING = text(f"status = '{RUNNING}'")  # the runs a runner holds now: the claim index leaves the others out

# PostgreSQL's json (not jsonb) keeps the text as given: 1e16 stays a float, and "\u0000" is allowed.
JSONDocument = JSON(none_as_null=True)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("hash_scheme", String(64), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", Integer, ForeignKey("batches.id", ondelete="CASCADE"), nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("specification", JSONDocument, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("claim_token", String(32)),
    Column("claim_node", String(255)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("error_type", String(255)),
    Column("error_message", Text),
    Column("traceback", Text),
    Column("result", LargeBinary),
    Column("result_json", JSONDocument),
    Column("progress", Float),
    Column("progress_total", Float),
    Column("output", Text),
    UniqueConstraint("batch_id", "spec_hash"),
    CheckConstraint("status IN ('pending', 'running', 'completed', 'failed')", name="status"),
    Index(None, "batch_id", "status", "id"),
    Index("ix_runs_running_claim_token", "claim_token", sqlite_where=_IS_RUNNING, postgresql_where=_IS_RUNNING),
)

# What registering specifications knows of each batch (one row per batch, made with it): the digest of the list
# whose runs the batch holds exactly, so that registering that list again reads instead of hashing it; and the runner
# registering a list now, so that runners given the same list wait for it instead of hashing it too.
registrations = Table(
    "registrations",
    metadata,
    Column("batch_id", Integer, ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("listed_digest", String(64)),
    Column("listed_count", Integer),
    Column("registering_digest", String(64)),
    Column("registering_token", String(32)),
    Column("registering_host", String(255)),
    Column("registering_node", String(255)),
    Column("registering_pid", Integer),
    Column("registering_until", DateTime(timezone=True)),
)

# The saved states of checkpointed runs in progress, newest last; removed when their run completes.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("state", LargeBinary, nullable=False),
    Index(None, "run_id", "id"),
)
