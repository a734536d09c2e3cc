"""The one module that reads and writes rows: batches, pending runs, claims, leases and outcomes."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import SQLAlchemyError

from smallab_db.database import JSONText, describe, read_only
from smallab_db.errors import DatabaseError
from smallab_db.execution import Outcome
from smallab_db.schema import COMPLETED, FAILED, PENDING, RUNNING, batches, runs

# Tokens of the runners alive in this process: a same-host row with this pid and another token is abandoned.
_LIVE_TOKENS: set[str] = set()


def utc_now() -> datetime:
    """Return the current time in UTC, as stored in every timestamp column."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: host and pid for a quick liveness check, a token that only this runner knows."""

    lease_seconds: float
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def lease_end(self) -> datetime:
        """Return when a lease taken or renewed now expires."""
        return utc_now() + timedelta(seconds=self.lease_seconds)


@dataclass(frozen=True)
class ImportedRun:
    """A completed run brought in from a folder tree."""

    spec_hash: str
    canonical: str
    result_pickle: bytes
    result_json: str | None


@dataclass(frozen=True)
class Registration:
    """What registering a list of specifications found."""

    skipped: int


class RunStore:
    """All SQL of smallab-db, over one engine. Methods are safe to call from several threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
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
        """Return the id of the batch called ``name``, creating it if needed."""
        with self._writing() as connection:
            connection.execute(self._insert_ignoring_duplicates(batches, {"name": name, "created_at": utc_now()}))
            return connection.execute(select(batches.c.id).where(batches.c.name == name)).scalar_one()

    def find_batch(self, name: str) -> int | None:
        """Return the id of the batch called ``name``, or None."""
        with self._reading() as connection:
            return connection.execute(select(batches.c.id).where(batches.c.name == name)).scalar_one_or_none()

    def batch_counts(self) -> list[tuple[str, dict[str, int]]]:
        """Return each batch's name with its number of runs per status, in creation order."""
        query = (
            select(batches.c.name, runs.c.status, func.count(runs.c.id))
            .select_from(batches.outerjoin(runs))
            .group_by(batches.c.id, batches.c.name, runs.c.status)
            .order_by(batches.c.id)
        )
        counts: dict[str, dict[str, int]] = {}
        with self._reading() as connection:
            for name, status, count in connection.execute(query):
                per_status = counts.setdefault(name, {})
                if status is not None:
                    per_status[status] = count
        return list(counts.items())

    # -- registering specifications ------------------------------------------------------------------------------

    def register(self, batch_id: int, hashed: Sequence[tuple[str, str]], rerun_all: bool) -> Registration:
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
            if requeue_ids:
                connection.execute(update(runs).where(runs.c.id.in_(requeue_ids)).values(status=PENDING))
        skipped = 0 if rerun_all else sum(status == COMPLETED for status in status_of.values())
        return Registration(skipped=skipped)

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

    def count(self, batch_id: int, status: str) -> int:
        """Return how many runs of the batch have ``status``."""
        with self._reading() as connection:
            query = select(func.count()).where(runs.c.batch_id == batch_id, runs.c.status == status)
            return connection.execute(query).scalar_one()

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
                lease_expires_at=owner.lease_end(),
                started_at=utc_now(),
                finished_at=None,
            )
            .returning(runs.c.id, runs.c.specification)
        )
        _LIVE_TOKENS.add(owner.token)
        with self._writing() as connection:
            claimed = [(row.id, row.specification) for row in connection.execute(statement)]
        claimed.sort(key=lambda pair: pair[0])
        return claimed

    def renew_lease(self, owner: Owner) -> None:
        """Push back the lease of every run ``owner`` still holds."""
        with self._writing() as connection:
            connection.execute(
                update(runs)
                .where(runs.c.claim_token == owner.token, runs.c.status == RUNNING)
                .values(lease_expires_at=owner.lease_end())
            )

    def reclaim_abandoned(self, batch_id: int, owner: Owner) -> int:
        """Return to pending the batch's running runs whose owner is gone; return how many.

        An owner is gone when its lease has expired, or when it ran on this host and its process no longer exists
        (or is this process, under a token no live runner here holds).
        """
        running_here = (
            select(runs.c.pid, runs.c.claim_token)
            .distinct()
            .where(runs.c.batch_id == batch_id, runs.c.status == RUNNING, runs.c.host == owner.host)
        )
        with self._writing() as connection:
            dead_tokens = [token for pid, token in connection.execute(running_here) if not _owner_alive(pid, token)]
            abandoned = or_(runs.c.lease_expires_at < utc_now(), runs.c.claim_token.in_(dead_tokens))
            result = connection.execute(
                update(runs)
                .where(runs.c.batch_id == batch_id, runs.c.status == RUNNING, abandoned)
                .values(status=PENDING, claim_token=None, lease_expires_at=None)
            )
            return result.rowcount

    def release(self, owner: Owner, started: Sequence[int], unstarted: Sequence[int]) -> None:
        """Return ``owner``'s unfinished claims to pending; executions that never started are not counted."""
        released = {"status": PENDING, "claim_token": None, "lease_expires_at": None}
        held = (runs.c.claim_token == owner.token) & (runs.c.status == RUNNING)
        with self._writing() as connection:
            if started:
                connection.execute(update(runs).where(held, runs.c.id.in_(started)).values(**released))
            if unstarted:
                connection.execute(
                    update(runs).where(held, runs.c.id.in_(unstarted)).values(attempts=runs.c.attempts - 1, **released)
                )
        _LIVE_TOKENS.discard(owner.token)

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

    # -- reading results -----------------------------------------------------------------------------------------

    def iter_runs(self, batch_id: int, status: str | None = COMPLETED, chunk: int = 1000) -> Iterator[Row[Any]]:
        """Yield the batch's runs (all columns) in id order, ``chunk`` rows at a time."""
        query = select(runs).where(runs.c.batch_id == batch_id).order_by(runs.c.id)
        if status is not None:
            query = query.where(runs.c.status == status)
        with self._reading() as connection:
            yield from connection.execution_options(yield_per=chunk).execute(query)

    def iter_run_summaries(self, batch_id: int, status: str | None = None, chunk: int = 5000) -> Iterator[Row[Any]]:
        """Yield the batch's runs (with ``status``, if given) without the traceback; ``result_pickle`` only where
        the result is not JSON."""
        query = (
            select(
                runs.c.id,
                runs.c.spec_hash,
                runs.c.specification,
                runs.c.status,
                runs.c.attempts,
                runs.c.started_at,
                runs.c.finished_at,
                runs.c.error_type,
                runs.c.result_json,
                case((runs.c.result_json.is_(None), runs.c.result), else_=None).label("result_pickle"),
            )
            .where(runs.c.batch_id == batch_id)
            .order_by(runs.c.id)
        )
        if status is not None:
            query = query.where(runs.c.status == status)
        with self._reading() as connection:
            yield from connection.execution_options(yield_per=chunk).execute(query)

    def runs_with_hash_prefix(self, prefix: str, batch_id: int | None, limit: int) -> list[Row[Any]]:
        """Return up to ``limit`` runs whose hash starts with ``prefix``: all columns, plus ``batch``, its name."""
        query = (
            select(runs, batches.c.name.label("batch"))
            .join(batches, batches.c.id == runs.c.batch_id)
            .where(runs.c.spec_hash.startswith(prefix.lower(), autoescape=True))
            .order_by(runs.c.id)
            .limit(limit)
        )
        if batch_id is not None:
            query = query.where(runs.c.batch_id == batch_id)
        with self._reading() as connection:
            return list(connection.execute(query))

    # -- transactions --------------------------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that takes the write lock at once (``BEGIN IMMEDIATE`` on SQLite)."""
        with self._translated_errors(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A transaction that only reads, so on SQLite it does not wait for writers."""
        with self._translated_errors(), read_only(self.engine.connect()) as connection, connection.begin():
            yield connection

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as error:
            reason = getattr(error, "orig", None) or error
            raise DatabaseError(f"database {describe(self.engine.url)} failed: {reason}") from error

    def _insert_ignoring_duplicates(self, table: Any, values: dict[str, Any] | None = None) -> Any:
        dialect = self.engine.dialect.name
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


def _owner_alive(pid: int | None, token: str | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return token in _LIVE_TOKENS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
