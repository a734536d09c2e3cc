"""Reading runs and batches: every query that changes nothing. ``store.RunStore`` adds the writes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import Executable

from smallab_db.bulk import fetched
from smallab_db.database import describe, read_only, reason
from smallab_db.errors import DatabaseError, TransientDatabaseError
from smallab_db.experiment import Specification
from smallab_db.schema import COMPLETED, RUNNING, batches, checkpoints, runs
from smallab_db.transient import is_transient

# A look at the end of the table's primary key, which grows when runs are added (0 when there are none).
NEWEST_RUN_ID = select(func.coalesce(func.max(runs.c.id), 0))


@dataclass
class KnownRuns:
    """A batch's runs as a runner read them before registering specifications.

    Attributes:
        by_hash: ``spec_hash: (run id, status)`` of the runs read.
        whole: ``by_hash`` holds every run of the batch up to ``newest_id``; else only runs looked up.
        newest_id: the newest run id of the whole table when the runs were last read; while it stays the same, no
            run was added since.
    """

    by_hash: dict[str, tuple[int, str]]
    whole: bool
    newest_id: int = -1


class RunQueries:
    """The read-only queries over one engine; safe to call from several threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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

    def count(self, batch_id: int, status: str | None = None) -> int:
        """Return how many runs of the batch have ``status`` (None: any)."""
        query = select(func.count()).where(runs.c.batch_id == batch_id)
        if status is not None:
            query = query.where(runs.c.status == status)
        with self._reading() as connection:
            return connection.execute(query).scalar_one()

    def latest_run_seconds(self, batch_id: int, runs_read: int = 16) -> float | None:
        """Return the mean time the batch's latest completed runs took (up to ``runs_read`` of them), each from its
        start to its end; None when none is completed with both times (an imported run may have none)."""
        query = (
            select(runs.c.started_at, runs.c.finished_at)
            .where(runs.c.batch_id == batch_id, runs.c.status == COMPLETED)
            .order_by(runs.c.id.desc())
            .limit(runs_read)
        )
        with self._reading() as connection:
            times = connection.execute(query).all()
        spans = [(finished - started).total_seconds() for started, finished in times if started and finished]
        return sum(spans) / len(spans) if spans else None

    def known_runs(self, batch_id: int, whole: bool) -> KnownRuns:
        """Return what registering needs to know of the batch's runs beforehand: all of them, read in one pass, if
        ``whole``; else none (registering then looks each hash up)."""
        known = KnownRuns({}, whole)
        if whole:
            with self._reading() as connection:
                self.catch_up(connection, batch_id, known)
        return known

    @staticmethod
    def catch_up(connection: Connection, batch_id: int, known: KnownRuns) -> dict[str, tuple[int, str]]:
        """Read into ``known`` the batch's runs added since it was last read (by their ids, which grow); return
        them."""
        newest_id = connection.execute(NEWEST_RUN_ID).scalar_one()
        if newest_id == known.newest_id:
            return {}
        query = select(runs.c.spec_hash, runs.c.id, runs.c.status).where(
            runs.c.batch_id == batch_id, runs.c.id > known.newest_id
        )
        added = {spec_hash: (run_id, status) for spec_hash, run_id, status in fetched(connection.execute(query))}
        known.by_hash.update(added)
        known.newest_id = newest_id
        return added

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
            yield from cast("Iterator[Row[Any]]", connection.execution_options(yield_per=chunk).execute(query))

    def specifications_of(self, run_ids: Sequence[int]) -> dict[int, Specification]:
        """Return the specification of each run id."""
        with self._reading() as connection:
            query = select(runs.c.id, runs.c.specification).where(runs.c.id.in_(run_ids))
            return {run_id: spec for run_id, spec in connection.execute(query)}

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

    # -- runs in progress ----------------------------------------------------------------------------------------------

    def checkpoint_states(self, run_id: int) -> list[bytes]:
        """Return the run's checkpoints, newest first (a run keeps only a few)."""
        query = select(checkpoints.c.state).where(checkpoints.c.run_id == run_id).order_by(checkpoints.c.id.desc())
        with self._reading() as connection:
            return list(connection.execute(query).scalars())

    def run_output(self, run_id: int) -> Row[Any] | None:
        """Return the run's ``status``, ``attempts`` and ``output``, or None when it no longer exists."""
        query = select(runs.c.status, runs.c.attempts, runs.c.output).where(runs.c.id == run_id)
        with self._reading() as connection:
            return cast("Row[Any] | None", connection.execute(query).one_or_none())

    def running_progress(self, batch_id: int) -> list[Row[Any]]:
        """Return ``(id, specification, progress, progress_total)`` of the batch's running runs (of every runner), in
        id order."""
        query = (
            select(runs.c.id, runs.c.specification, runs.c.progress, runs.c.progress_total)
            .where(runs.c.batch_id == batch_id, runs.c.status == RUNNING)
            .order_by(runs.c.id)
        )
        with self._reading() as connection:
            return list(connection.execute(query))

    # -- statements built elsewhere ------------------------------------------------------------------------------------

    def read(self, statement: Executable) -> list[Any]:
        """Return the rows of one statement that only reads (``watch``'s snapshot, the report's aggregates)."""
        with self._reading() as connection:
            return list(connection.execute(statement))

    def stream(self, statement: Executable, chunk: int = 5000) -> Iterator[Any]:
        """Yield the rows of one statement that only reads, ``chunk`` rows at a time, so memory stays flat."""
        with self._reading() as connection:
            yield from connection.execution_options(yield_per=chunk).execute(statement)

    # -- transactions --------------------------------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A transaction that only reads, so on SQLite it does not wait for writers."""
        with self._translated_errors(), read_only(self.engine.connect()) as connection, connection.begin():
            yield connection

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """Raise the database's errors as :class:`DatabaseError`, or :class:`TransientDatabaseError` for those a
        retry may get past; a value the driver cannot send (text it cannot encode, an integer too large) is a
        :class:`DatabaseError` too."""
        try:
            yield
        except SQLAlchemyError as error:
            kind = TransientDatabaseError if is_transient(error) else DatabaseError
            raise kind(f"database {describe(self.engine.url)} failed: {reason(error)}") from error
        except (UnicodeError, OverflowError) as error:
            raise DatabaseError(f"database {describe(self.engine.url)} refused a value: {error}") from error
