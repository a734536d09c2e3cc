"""The one module that writes rows: batches, pending runs, claims, leases and outcomes."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from smallab_db import liveness
from smallab_db.database import JSONText
from smallab_db.errors import DatabaseError, SchemaError
from smallab_db.execution import Outcome
from smallab_db.queries import RunQueries
from smallab_db.schema import COMPLETED, FAILED, PENDING, RUNNING, batches, runs
from smallab_db.specification import HASH_SCHEME


def utc_now() -> datetime:
    """Return the current time in UTC, as stored in every timestamp column."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: host, node and pid for a quick liveness check, a token that only this runner knows."""

    lease_seconds: float
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    node: str = field(default_factory=liveness.this_node)


@dataclass(frozen=True)
class ImportedRun:
    """A completed run brought in from a folder tree."""

    spec_hash: str
    canonical: str
    result_pickle: bytes
    result_json: str | None


class RunStore(RunQueries):
    """The one place that writes rows (and, through :class:`RunQueries`, reads them), over one engine. Methods
    are safe to call from several threads."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._record = (
            update(runs)
            .where(
                runs.c.id == bindparam("b_id"),
                runs.c.claim_token == bindparam("b_token"),
                runs.c.status == RUNNING,
            )
            .values(
                status=bindparam("b_status"),
                attempts=runs.c.attempts + bindparam("b_extra_executions"),
                started_at=bindparam("b_started"),
                finished_at=bindparam("b_finished"),
                lease_expires_at=None,
                result=bindparam("b_result"),
                result_json=bindparam("b_result_json"),
                error_type=bindparam("b_error_type"),
                error_message=bindparam("b_error_message"),
                traceback=bindparam("b_traceback"),
            )
        )

    # -- batches -------------------------------------------------------------------------------------------------

    def ensure_batch(self, name: str) -> int:
        """Return the id of the batch called ``name``, creating it if needed.

        Raises:
            SchemaError: the batch's runs were hashed with another scheme than this smallab-db's.
        """
        new = {"name": name, "created_at": utc_now(), "hash_scheme": HASH_SCHEME}
        with self._writing() as connection:
            connection.execute(self._insert_ignoring_duplicates(batches, new))
            query = select(batches.c.id, batches.c.hash_scheme).where(batches.c.name == name)
            batch_id, scheme = connection.execute(query).one()
        if scheme != HASH_SCHEME:
            raise SchemaError(
                f"batch {name!r} hashes specifications with {scheme!r} but this smallab-db uses {HASH_SCHEME!r}: "
                "use the smallab-db version that created it, or a new batch name"
            )
        return batch_id

    # -- registering specifications ------------------------------------------------------------------------------

    def register(self, batch_id: int, hashed: Sequence[tuple[str, str]], rerun_all: bool) -> int:
        """Insert missing specifications as pending and queue finished ones again as asked.

        Args:
            batch_id: the batch.
            hashed: ``(spec_hash, canonical_json)`` pairs; duplicates are stored once.
            rerun_all: queue completed runs again too, not only failed ones.

        Returns:
            How many of them are completed and will be skipped.
        """
        requeued = (FAILED, COMPLETED) if rerun_all else (FAILED,)
        known = select(runs.c.id, runs.c.spec_hash, runs.c.status).where(
            runs.c.batch_id == batch_id, runs.c.spec_hash.in_([spec_hash for spec_hash, _ in hashed])
        )
        with self._writing() as connection:
            status_of: dict[str, str] = {}
            requeue_ids = []
            for run_id, spec_hash, status in connection.execute(known):
                status_of[spec_hash] = status
                if status in requeued:
                    requeue_ids.append(run_id)
            now = utc_now()
            missing = [
                {
                    "batch_id": batch_id,
                    "spec_hash": spec_hash,
                    "specification": JSONText(canonical),
                    "status": PENDING,
                    "attempts": 0,
                    "created_at": now,
                }
                for spec_hash, canonical in dict(hashed).items()
                if spec_hash not in status_of
            ]
            if missing:
                connection.execute(self._insert_ignoring_duplicates(runs), missing)
            if requeue_ids:  # the status condition: another runner may have claimed one since the read
                requeue = update(runs).where(runs.c.id.in_(requeue_ids), runs.c.status.in_(requeued))
                connection.execute(requeue.values(status=PENDING))
        return 0 if rerun_all else sum(status == COMPLETED for status in status_of.values())

    def import_completed(self, batch_id: int, found: Sequence[ImportedRun]) -> int:
        """Store runs found elsewhere as completed, unless the batch already has them completed or running.

        Returns:
            How many runs were added or turned completed.
        """
        unique = {run.spec_hash: run for run in found}
        known = select(runs.c.id, runs.c.spec_hash, runs.c.status).where(
            runs.c.batch_id == batch_id, runs.c.spec_hash.in_(list(unique))
        )
        with self._writing() as connection:
            status_of = {spec_hash: (run_id, status) for run_id, spec_hash, status in connection.execute(known)}
            missing = [
                {
                    "batch_id": batch_id,
                    "spec_hash": run.spec_hash,
                    "specification": JSONText(run.canonical),
                    "status": COMPLETED,
                    "attempts": 1,
                    "created_at": utc_now(),
                    "result": run.result_pickle,
                    "result_json": _json_text(run.result_json),
                }
                for run in unique.values()
                if run.spec_hash not in status_of
            ]
            if missing:
                connection.execute(self._insert_ignoring_duplicates(runs), missing)
            unfinished = [
                {
                    "b_id": run_id,
                    "b_result": unique[spec_hash].result_pickle,
                    "b_json": _json_text(unique[spec_hash].result_json),
                }
                for spec_hash, (run_id, status) in status_of.items()
                if status in (PENDING, FAILED)
            ]
            if unfinished:
                connection.execute(
                    update(runs)
                    .where(runs.c.id == bindparam("b_id"), runs.c.status.in_((PENDING, FAILED)))
                    .values(
                        status=COMPLETED,
                        result=bindparam("b_result"),
                        result_json=bindparam("b_json"),
                        error_type=None,
                        error_message=None,
                        traceback=None,
                    ),
                    unfinished,
                )
        return len(missing) + len(unfinished)

    def requeue_failed(self, batch_id: int) -> int:
        """Put the batch's failed runs back to pending; return how many."""
        with self._writing() as connection:
            statement = update(runs).where(runs.c.batch_id == batch_id, runs.c.status == FAILED)
            return connection.execute(statement.values(status=PENDING)).rowcount

    def delete_batch(self, batch_id: int) -> int:
        """Delete a batch and all its runs; return how many runs were deleted."""
        with self._writing() as connection:
            deleted = connection.execute(delete(runs).where(runs.c.batch_id == batch_id)).rowcount
            connection.execute(delete(batches).where(batches.c.id == batch_id))
            return deleted

    # -- claims --------------------------------------------------------------------------------------------------

    def claim(self, batch_id: int, owner: Owner, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Atomically mark up to ``limit`` pending runs of the batch as running for ``owner``.

        Returns:
            ``(run_id, specification)`` of the claimed runs, in id order.
        """
        candidates = (
            select(runs.c.id)
            .where(runs.c.batch_id == batch_id, runs.c.status == PENDING)
            .order_by(runs.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(runs)
            .where(runs.c.id.in_(candidates.scalar_subquery()))
            .values(
                status=RUNNING,
                attempts=runs.c.attempts + 1,
                host=owner.host,
                pid=owner.pid,
                claim_token=owner.token,
                claim_node=owner.node,
                lease_expires_at=self._lease_end(owner),
                started_at=utc_now(),
                finished_at=None,
            )
            .returning(runs.c.id, runs.c.specification)
        )
        liveness.hold(owner.token)
        with self._writing() as connection:
            claimed = [(row.id, row.specification) for row in connection.execute(statement)]
        claimed.sort(key=lambda pair: pair[0])
        return claimed

    def renew_lease(self, owner: Owner) -> set[int]:
        """Push back the lease of every run ``owner`` still holds; return their ids (a lost claim is missing)."""
        with self._writing() as connection:
            renewed = connection.execute(
                update(runs)
                .where(runs.c.claim_token == owner.token, runs.c.status == RUNNING)
                .values(lease_expires_at=self._lease_end(owner))
                .returning(runs.c.id)
            )
            return set(renewed.scalars())

    def reclaim_abandoned(self, batch_id: int, owner: Owner) -> int:
        """Return to pending the batch's running runs whose owner is gone; return how many.

        An owner is gone when its lease has expired, or when it ran on this node and its process no longer exists
        (or is this process, under a token no live runner here holds).
        """
        running_here = (
            select(runs.c.pid, runs.c.claim_token)
            .distinct()
            .where(
                runs.c.batch_id == batch_id,
                runs.c.status == RUNNING,
                runs.c.host == owner.host,
                runs.c.claim_node == owner.node,
            )
        )
        with self._writing() as connection:
            running = connection.execute(running_here)
            dead_tokens = [token for pid, token in running if not liveness.owner_alive(pid, token)]
            abandoned = or_(runs.c.lease_expires_at < self._now(), runs.c.claim_token.in_(dead_tokens))
            result = connection.execute(
                update(runs)
                .where(runs.c.batch_id == batch_id, runs.c.status == RUNNING, abandoned)
                .values(status=PENDING, claim_token=None, lease_expires_at=None)
            )
            return result.rowcount

    def release(self, owner: Owner, unstarted: Sequence[int]) -> None:
        """Return every unfinished claim of ``owner`` to pending; the ``unstarted`` ones are not counted as executed."""
        released = {"status": PENDING, "claim_token": None, "lease_expires_at": None}
        held = (runs.c.claim_token == owner.token) & (runs.c.status == RUNNING)
        try:
            with self._writing() as connection:
                if unstarted:
                    connection.execute(
                        update(runs)
                        .where(held, runs.c.id.in_(unstarted))
                        .values(attempts=runs.c.attempts - 1, **released)
                    )
                connection.execute(update(runs).where(held).values(**released))
        finally:
            liveness.let_go(owner.token)

    def _now(self) -> Any:
        """The time leases are compared with: the server's clock on PostgreSQL, shared by every host."""
        return func.now() if self.engine.dialect.name == "postgresql" else utc_now()

    def _lease_end(self, owner: Owner) -> Any:
        return self._now() + timedelta(seconds=owner.lease_seconds)

    # -- outcomes ------------------------------------------------------------------------------------------------

    def record(self, owner: Owner, outcomes: Sequence[Outcome]) -> list[int]:
        """Store finished runs held by ``owner`` in one transaction.

        Returns:
            The ids whose claim another runner had taken over: their outcome was refused and not stored.
        """
        if not outcomes:
            return []
        parameters = [
            {
                "b_id": outcome.run_id,
                "b_token": owner.token,
                "b_status": COMPLETED if outcome.error_type is None else FAILED,
                "b_extra_executions": outcome.executions - 1,
                "b_started": outcome.started_at,
                "b_finished": outcome.finished_at,
                "b_result": outcome.result_pickle,
                "b_result_json": _json_text(outcome.result_json),
                "b_error_type": outcome.error_type,
                "b_error_message": outcome.error_message,
                "b_traceback": outcome.traceback,
            }
            for outcome in outcomes
        ]
        with self._writing() as connection:
            stored = connection.execute(self._record, parameters).rowcount
            if stored == len(parameters):
                return []
            ids = [outcome.run_id for outcome in outcomes]
            refused = select(runs.c.id).where(
                runs.c.id.in_(ids), or_(runs.c.claim_token.is_(None), runs.c.claim_token != owner.token)
            )
            return list(connection.execute(refused).scalars())

    # -- transactions --------------------------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that takes the write lock at once (``BEGIN IMMEDIATE`` on SQLite)."""
        with self._translated_errors(), self.engine.begin() as connection:
            yield connection

    def _insert_ignoring_duplicates(self, table: Any, values: dict[str, Any] | None = None) -> Any:
        dialect = self.engine.dialect.name
        statement: Any
        if dialect == "sqlite":
            statement = sqlite.insert(table)
        elif dialect == "postgresql":
            statement = postgresql.insert(table)
        else:
            raise DatabaseError(f"smallab-db does not support the {dialect!r} database: use SQLite or PostgreSQL")
        if values is not None:
            statement = statement.values(values)
        return statement.on_conflict_do_nothing()


def _json_text(text: str | None) -> JSONText | None:
    return None if text is None else JSONText(text)
