"""The one module that writes rows: batches, pending runs, claims, leases and outcomes."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    DateTime,
    Interval,
    String,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from smallab_db import liveness
from smallab_db.bulk import DriverStatement, fetched, json_loader
from smallab_db.codec import JSONText
from smallab_db.database import describe
from smallab_db.errors import DatabaseError, SchemaError, TransientDatabaseError
from smallab_db.experiment import Specification
from smallab_db.queries import NEWEST_RUN_ID, KnownRuns, RunQueries
from smallab_db.records import ClaimOutlook, Fate, Holder, ImportedRun, Outcome, Owner, RegistrationState, utc_now
from smallab_db.schema import COMPLETED, FAILED, PENDING, RUNNING, batches, checkpoints, registrations, runs
from smallab_db.specification import HASH_SCHEME
from smallab_db.transient import retry_transient
from smallab_db.write_turns import WriteTurns

T = TypeVar("T")
_RUNNING: Any = literal_column(f"'{RUNNING}'")  # written into a bulk statement: no value to bind per row
ANY_CHECKPOINT = select(checkpoints.c.id).limit(1)  # most batches keep none: then none need deleting


class RunStore(RunQueries):
    """The one place that writes rows (and, through :class:`RunQueries`, reads them), over one engine.

    Methods are safe to call from several threads: the writes of one store take turns on a lock of this process
    (so its own threads never wait in SQLite's busy handler), and each is retried whole while it fails with a
    transient error (a dropped connection, a busy database).
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._turns = WriteTurns(engine.url)
        self._load_json = json_loader(engine.dialect)
        self._record = DriverStatement(
            update(runs)
            .where(
                runs.c.id == bindparam("b_id"),
                runs.c.claim_token == bindparam("b_token"),
                runs.c.status == _RUNNING,
            )
            .values(
                status=bindparam("b_status"),
                attempts=runs.c.attempts + bindparam("b_extra_executions"),
                started_at=bindparam("b_started"),
                finished_at=bindparam("b_finished"),
                lease_expires_at=null(),
                result=bindparam("b_result"),
                result_json=bindparam("b_result_json"),
                error_type=bindparam("b_error_type"),
                error_message=bindparam("b_error_message"),
                traceback=bindparam("b_traceback"),
                # None keeps what the run wrote while it ran: the output of a worker that died
                output=func.coalesce(bindparam("b_output", type_=runs.c.output.type), runs.c.output),
            ),
            engine.dialect,
        )
        self._record_completed = DriverStatement(  # the common outcome (see _is_plain_completion): fewer values
            update(runs)
            .where(
                runs.c.id == bindparam("b_id"), runs.c.claim_token == bindparam("b_token"), runs.c.status == _RUNNING
            )
            .values(
                status=literal_column(f"'{COMPLETED}'"),
                started_at=bindparam("b_started"),
                finished_at=bindparam("b_finished"),
                lease_expires_at=null(),
                result=bindparam("b_result"),
                result_json=bindparam("b_result_json"),
                error_type=null(),
                error_message=null(),
                traceback=null(),
            ),
            engine.dialect,
        )
        candidates = (
            _pending(bindparam("b_batch"))
            .order_by(runs.c.id)
            .limit(bindparam("b_limit"))
            .with_for_update(skip_locked=True)
        )
        # The statements of a runner's first write turns are compiled here, once: compiling one takes longer than
        # running it, and the other runners would wait meanwhile.
        self._claim = DriverStatement(
            update(runs)
            .where(runs.c.id.in_(candidates.scalar_subquery()))
            .values(
                status=RUNNING,
                attempts=runs.c.attempts + 1,
                host=bindparam("b_host"),
                pid=bindparam("b_pid"),
                claim_token=bindparam("b_token"),
                claim_node=bindparam("b_node"),
                lease_expires_at=self._lease_end_expression(),
                started_at=bindparam("b_started"),
                finished_at=None,
                output=None,
            )
            .returning(runs.c.id, runs.c.specification),
            engine.dialect,
        )
        self._pending_span = DriverStatement(_PENDING_SPAN, engine.dialect)
        self._any_checkpoint = DriverStatement(ANY_CHECKPOINT, engine.dialect)
        self._insert_batch = DriverStatement(
            self._insert_ignoring_duplicates(batches).values(
                name=bindparam("b_name"), created_at=bindparam("b_created"), hash_scheme=bindparam("b_scheme")
            ),
            engine.dialect,
        )
        self._batch_named = DriverStatement(
            select(batches.c.id, batches.c.hash_scheme).where(batches.c.name == bindparam("b_name")), engine.dialect
        )
        self._insert_registrations = DriverStatement(  # a turn to register given, or None for each of its values
            self._insert_ignoring_duplicates(registrations).values(
                batch_id=bindparam("b_batch"), **self._registering_columns()
            ),
            engine.dialect,
        )
        # The reads every runner makes once or a few times, most of them while the other runners start or end too.
        server_clock = engine.dialect.name == "postgresql"
        self._outlook = DriverStatement(_outlook(server_clock), engine.dialect)
        self._registration_state = DriverStatement(_registration_state(server_clock), engine.dialect)
        self._batch_found = DriverStatement(
            select(batches.c.id, batches.c.hash_scheme)
            .join_from(batches, registrations)  # a batch is created with its row of registrations
            .where(batches.c.name == bindparam("b_name")),
            engine.dialect,
        )
        in_batch = runs.c.batch_id == bindparam("b_batch", type_=runs.c.batch_id.type)
        self._batch_size = DriverStatement(select(func.count()).where(in_batch), engine.dialect)
        self._completed_ids = DriverStatement(select(runs.c.id).where(in_batch, _status_is(COMPLETED)), engine.dialect)
        self._any_requeued = {  # by rerun_all
            rerun_all: DriverStatement(
                select(runs.c.id).where(in_batch, _status_is(*statuses)).limit(1), engine.dialect
            )
            for rerun_all, statuses in ((False, (FAILED,)), (True, (FAILED, COMPLETED)))
        }
        self._any_held = DriverStatement(
            select(runs.c.id).where(runs.c.claim_token == bindparam("b_token"), runs.c.status == _RUNNING).limit(1),
            engine.dialect,
        )
        running = (runs.c.batch_id == bindparam("b_batch", type_=runs.c.batch_id.type)) & (runs.c.status == _RUNNING)
        self._claimers_here = DriverStatement(
            select(runs.c.pid, runs.c.claim_token)
            .distinct()
            .where(running, runs.c.host == bindparam("b_host"), runs.c.claim_node == bindparam("b_node")),
            engine.dialect,
        )
        self._any_lease_ended = DriverStatement(
            select(runs.c.id).where(running, runs.c.lease_expires_at < self._now_parameter()).limit(1), engine.dialect
        )
        # The registering runner ends its turn while the others wait for it.
        r = registrations.c
        of_batch = r.batch_id == bindparam("b_batch", type_=r.batch_id.type)
        self._lock_registrations = DriverStatement(
            select(r.registering_token).where(of_batch).with_for_update(), engine.dialect
        )
        ended = {f"registering_{column}": None for column in ("digest", "token", "host", "node", "pid", "until")}
        self._end_registration = DriverStatement(
            update(registrations).where(of_batch, r.registering_token == bindparam("b_token")).values(ended),
            engine.dialect,
        )
        self._record_listed = DriverStatement(
            update(registrations)
            .where(of_batch)
            .values(listed_digest=bindparam("b_digest"), listed_count=bindparam("b_count")),
            engine.dialect,
        )
        self._insert_pending = DriverStatement(
            self._insert_ignoring_duplicates(runs).values(
                batch_id=bindparam("b_batch"),
                spec_hash=bindparam("b_hash"),
                specification=bindparam("b_specification"),
                status=PENDING,
                attempts=0,
                created_at=bindparam("b_created"),
            ),
            engine.dialect,
        )

    # -- batches -------------------------------------------------------------------------------------------------

    def ensure_batch(self, name: str, registering: tuple[str, Owner] | None = None) -> int:
        """Return the id of the batch called ``name``, creating it if needed. With ``registering`` = ``(digest,
        owner)``, the runner that creates the batch takes the turn to register the list ``digest`` in the same write
        (see :meth:`take_registration_turn`): runners started together on a new batch write once each, not twice.

        Raises:
            SchemaError: the batch's runs were hashed with another scheme than this smallab-db's.
        """
        new = {"b_name": name, "b_created": utc_now(), "b_scheme": HASH_SCHEME}
        row = self._registering_row(registering)

        def transaction(connection: Connection) -> tuple[int, str]:
            self._insert_batch.execute_once(connection, new)
            batch_id, scheme = fetched(self._batch_named.execute_once(connection, {"b_name": name}))[0]
            self._insert_registrations.execute_once(connection, {**row, "b_batch": batch_id})
            return batch_id, scheme

        found = self._fetched(self._batch_found, {"b_name": name}, f"finding batch {name!r}")
        batch_id, scheme = found[0] if found else self._write(transaction, f"creating batch {name!r}")
        if scheme != HASH_SCHEME:
            raise SchemaError(
                f"batch {name!r} hashes specifications with {scheme!r} but this smallab-db uses {HASH_SCHEME!r}: "
                "use the smallab-db version that created it, or a new batch name"
            )
        return int(batch_id)

    # -- registering specifications ------------------------------------------------------------------------------

    def register(
        self, batch_id: int, hashed: Sequence[tuple[str, str]], rerun_all: bool, known: KnownRuns | None = None
    ) -> list[int]:
        """Insert missing specifications as pending and queue finished ones again as asked.

        What ``known`` does not say is read first, outside the write lock: the runs added since it was read, when it
        holds the whole batch, else the hashes looked up. The write lock is taken only when there is something to
        write. So runners starting together on
        one batch do not each insert it again, one after the other: all but the first find it registered.

        Args:
            batch_id: the batch.
            hashed: ``(spec_hash, JSON text)`` pairs; duplicates are stored once.
            rerun_all: queue completed runs again too, not only failed ones.
            known: the batch's runs read beforehand (see :meth:`known_runs`), updated here as runs are looked up and
                added; None: each hash is looked up.

        Returns:
            The ids of the runs among them that are completed and stay so (none when ``rerun_all``).
        """
        requeued = (FAILED, COMPLETED) if rerun_all else (FAILED,)
        if known is None:
            known = KnownRuns({}, whole=False)
        texts = dict(hashed)
        found = {spec_hash: known.by_hash[spec_hash] for spec_hash in texts if spec_hash in known.by_hash}
        for last_try in (False, False, True):
            with self._reading() as connection:
                if known.whole:
                    added = self.catch_up(connection, batch_id, known)
                    found.update((spec_hash, added[spec_hash]) for spec_hash in texts.keys() & added.keys())
                else:
                    known.newest_id = connection.execute(NEWEST_RUN_ID).scalar_one()
                    found.update(self._registered(connection, batch_id, [h for h in texts if h not in found]))
            completed_ids = [run_id for run_id, status in found.values() if status == COMPLETED and not rerun_all]
            requeue_ids = [run_id for run_id, status in found.values() if status in requeued]
            missing = {spec_hash: text for spec_hash, text in texts.items() if spec_hash not in found}
            if not missing and not requeue_ids:
                return completed_ids
            registering = self._registering(batch_id, known, missing, requeue_ids, requeued, last_try)
            newest_id = self._write(registering, "registering specifications")
            if newest_id is not None:
                known.newest_id = newest_id  # the runs added since known was read are these: no need to read them
                return completed_ids
        raise AssertionError("the last try always writes")

    def _registering(
        self,
        batch_id: int,
        known: KnownRuns,
        missing: dict[str, str],
        requeue_ids: list[int],
        requeued: tuple[str, ...],
        last_try: bool,
    ) -> Callable[[Connection], int | None]:
        """The transaction that inserts ``missing``, queues ``requeue_ids`` again and returns the table's newest run
        id after. If runs were added since ``known`` was read, it writes nothing and returns None, so that they are
        read outside the write lock; unless it is the ``last_try``: it then looks the missing hashes up under the
        write lock."""

        json_text = self._insert_pending.json_text
        hashes = list(missing)
        rows = self._insert_pending.driver_rows(  # made before the transaction, so that the write lock is held briefly
            [{"b_hash": spec_hash, "b_specification": json_text(text)} for spec_hash, text in missing.items()],
            shared={"b_batch": batch_id, "b_created": utc_now()},
        )

        def transaction(connection: Connection) -> int | None:
            inserting = rows
            if connection.execute(NEWEST_RUN_ID).scalar_one() != known.newest_id:
                if not last_try:
                    return None
                present = self._registered(connection, batch_id, list(missing))
                inserting = [row for spec_hash, row in zip(hashes, rows, strict=True) if spec_hash not in present]
            self._insert_pending.execute(connection, inserting)
            if inserting:
                _unlist(connection, batch_id)
            if requeue_ids:  # the status condition: another runner may have claimed one since the read
                requeue = update(runs).where(runs.c.id.in_(requeue_ids), runs.c.status.in_(requeued))
                connection.execute(requeue.values(status=PENDING))
            return int(connection.execute(NEWEST_RUN_ID).scalar_one())

        return transaction

    def _registered(self, connection: Connection, batch_id: int, hashes: list[str]) -> dict[str, tuple[int, str]]:
        """Return ``spec_hash: (run id, status)`` of the batch's runs with one of ``hashes``."""
        if not hashes:
            return {}
        query = select(runs.c.spec_hash, runs.c.id, runs.c.status).where(
            runs.c.batch_id == batch_id, self._hash_among(hashes)
        )
        return {spec_hash: (run_id, status) for spec_hash, run_id, status in fetched(connection.execute(query))}

    def _hash_among(self, hashes: list[str]) -> Any:
        """The condition that a run's hash is one of ``hashes``, as one parameter however many they are (a JSON
        array on SQLite, an array on PostgreSQL), so the statement compiles once."""
        if self.engine.dialect.name == "postgresql":
            return runs.c.spec_hash == any_(bindparam("hashes", hashes, type_=postgresql.ARRAY(String)))
        listed = func.json_each(bindparam("hashes", json.dumps(hashes))).table_valued("value")
        return runs.c.spec_hash.in_(select(listed.c.value))

    # -- registering a list the batch may hold already ----------------------------------------------------------

    def registration(self, batch_id: int) -> RegistrationState | None:
        """Return the batch's row of registrations as it is now; None if the batch was deleted meanwhile."""
        parameters = {"b_batch": batch_id, **self._clock_row()}
        with self._reading() as connection:
            rows = fetched(self._registration_state.execute_once(connection, parameters))
        if not rows:
            return None
        listed_digest, listed_count, digest, token, host, node, pid, in_time = rows[0]
        registering = None if token is None else Holder(host=host, node=node, pid=pid, token=token)
        return RegistrationState(listed_digest, listed_count, digest, registering, bool(in_time))

    def take_registration_turn(self, batch_id: int, digest: str, owner: Owner, after: str | None) -> bool:
        """Record that ``owner`` registers the list ``digest`` now, if the turn is still held by the token ``after``
        (None: nobody); return whether it was taken."""
        r = registrations.c
        statement = (
            update(registrations)
            .where(r.batch_id == batch_id, r.registering_token.is_not_distinct_from(after))
            .values(self._registering_columns())
        )
        row = self._registering_row((digest, owner))
        taken = self._write(lambda connection: connection.execute(statement, row).rowcount, "taking a registering turn")
        return bool(taken == 1)

    def _registering_row(self, registering: tuple[str, Owner] | None) -> dict[str, Any]:
        """The values of :meth:`_registering_columns` that say the runner ``owner`` of ``registering = (digest,
        owner)`` registers the list ``digest`` now; all None for ``registering`` None."""
        if registering is None:
            return dict.fromkeys(("b_digest", "b_token", "b_host", "b_node", "b_pid", "b_lease"))
        digest, owner = registering
        return {
            "b_digest": digest,
            "b_token": owner.token,
            "b_host": owner.host,
            "b_node": owner.node,
            "b_pid": owner.pid,
            "b_lease": self._lease_parameter(owner),
        }

    def _registering_columns(self) -> dict[str, Any]:
        """A batch's row of registrations's columns that say which runner registers which list now, as bind
        parameters (see :meth:`_registering_row`)."""
        return {
            "registering_digest": bindparam("b_digest"),
            "registering_token": bindparam("b_token"),
            "registering_host": bindparam("b_host"),
            "registering_node": bindparam("b_node"),
            "registering_pid": bindparam("b_pid"),
            "registering_until": self._lease_end_expression(),
        }

    def renew_registration_turn(self, batch_id: int, owner: Owner) -> None:
        """Push back the end of ``owner``'s turn to register, if it still has it."""
        statement = (
            update(registrations)
            .where(registrations.c.batch_id == batch_id, registrations.c.registering_token == owner.token)
            .values(registering_until=self._lease_end_expression())
        )
        lease = {"b_lease": self._lease_parameter(owner)}
        self._write(lambda connection: connection.execute(statement, lease), "renewing a turn to register")

    def end_registration_turn(self, batch_id: int, owner: Owner, listed: tuple[str, int] | None) -> None:
        """End ``owner``'s turn to register, if it still has it; with ``listed`` = ``(digest, count)``, record that the
        batch's runs are that list's, if the batch has as many runs as that list has distinct specifications.

        Every change of which runs a batch has (adding, importing, deleting) clears what is recorded here, in its
        own transaction; the batch's row is locked before its runs are counted, so that a change committed after the
        count clears the record again.
        """
        batch = {"b_batch": batch_id}

        def transaction(connection: Connection) -> None:
            self._lock_registrations.execute_once(connection, batch)
            self._end_registration.execute_once(connection, {**batch, "b_token": owner.token})
            if listed is None:
                return
            digest, count = listed
            if self._batch_size.execute_once(connection, batch).scalar_one() == count:
                self._record_listed.execute_once(connection, {**batch, "b_digest": digest, "b_count": count})

        self._write(transaction, "ending a turn to register")

    def register_listed(self, batch_id: int, listed_count: int, rerun_all: bool) -> list[int] | None:
        """Register again the list recorded as the batch's runs (see :meth:`end_registration_turn`) without looking
        at its specifications: queue failed runs again, and completed ones too with ``rerun_all``.

        Returns:
            The ids of the completed runs that stay so, as :meth:`register` does; None, having done nothing, when
            the batch no longer has ``listed_count`` runs.
        """
        requeued = (FAILED, COMPLETED) if rerun_all else (FAILED,)
        in_batch = runs.c.batch_id == batch_id
        batch = {"b_batch": batch_id}
        with self._reading() as connection:
            if self._batch_size.execute_once(connection, batch).scalar_one() != listed_count:
                return None
            completed_ids = [] if rerun_all else list(self._completed_ids.execute_once(connection, batch).scalars())
            requeue = self._any_requeued[rerun_all].execute_once(connection, batch).first() is not None
        if requeue:
            statement = update(runs).where(in_batch, runs.c.status.in_(requeued)).values(status=PENDING)
            self._write(lambda connection: connection.execute(statement), "queuing runs again")
        return completed_ids

    def import_completed(self, batch_id: int, found: Sequence[ImportedRun]) -> int:
        """Store runs found elsewhere as completed, unless the batch already has them completed or running.

        Returns:
            How many runs were added or turned completed.
        """
        return self._write(lambda connection: self._import(connection, batch_id, found), "importing runs")

    def _import(self, connection: Connection, batch_id: int, found: Sequence[ImportedRun]) -> int:
        unique = {run.spec_hash: run for run in found}
        known = select(runs.c.id, runs.c.spec_hash, runs.c.status).where(
            runs.c.batch_id == batch_id, runs.c.spec_hash.in_(list(unique))
        )
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
            _unlist(connection, batch_id)
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
                .where(runs.c.id == bindparam("b_id"), or_(runs.c.status == PENDING, runs.c.status == FAILED))
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

    def requeue(self, batch_id: int, status: str, run_id: int | None = None) -> int:
        """Put the batch's runs with ``status`` (failed or completed) back to pending, or only run ``run_id`` if it
        still has it; return how many."""
        statement = update(runs).where(*self._chosen(batch_id, status, run_id)).values(status=PENDING)
        return self._write(lambda connection: connection.execute(statement).rowcount, f"requeuing {status} runs")

    def delete_runs(self, batch_id: int, status: str | None, run_id: int | None = None) -> int:
        """Delete the batch's runs with ``status`` (None: any), or only run ``run_id`` (if it has ``status``); the
        batch stays. Return how many were deleted."""
        statement = delete(runs).where(*self._chosen(batch_id, status, run_id))

        def transaction(connection: Connection) -> int:
            deleted = connection.execute(statement).rowcount
            _unlist(connection, batch_id)
            return int(deleted)

        return self._write(transaction, "deleting runs")

    @staticmethod
    def _chosen(batch_id: int, status: str | None, run_id: int | None) -> list[Any]:
        """The conditions that pick runs of a batch by status and id, either of them optional."""
        conditions = [runs.c.batch_id == batch_id]
        if status is not None:
            conditions.append(runs.c.status == status)
        if run_id is not None:
            conditions.append(runs.c.id == run_id)
        return conditions

    def delete_batch(self, batch_id: int) -> int:
        """Delete a batch and all its runs; return how many runs were deleted."""

        def transaction(connection: Connection) -> int:
            deleted = connection.execute(delete(runs).where(runs.c.batch_id == batch_id)).rowcount
            connection.execute(delete(batches).where(batches.c.id == batch_id))
            return deleted

        return self._write(transaction, "deleting a batch")

    # -- claims --------------------------------------------------------------------------------------------------

    def claim_outlook(self, batch_id: int, owner: Owner) -> ClaimOutlook:
        """What ``owner``'s next claim will find in the batch, read without a write turn: how many runners hold live
        claims in it, ``owner``'s runner included, and the span of its pending runs' ids (see :func:`_pending_span`),
        0 when none is pending."""
        parameters = {"b_batch": batch_id, "b_token": owner.token, **self._clock_row()}

        def outlook(connection: Connection) -> ClaimOutlook:
            others, pending = fetched(self._outlook.execute_once(connection, parameters))[0]
            return ClaimOutlook(pending=int(pending), runners=1 + int(others))

        return self._read(outlook, "looking for pending runs")

    def claim(
        self,
        batch_id: int,
        owner: Owner,
        limit: int,
        first: Callable[[], None] = lambda: None,
        shared: Callable[[int], int] | None = None,
    ) -> list[tuple[int, Specification]]:
        """Atomically mark up to ``limit`` pending runs of the batch as running for ``owner``; ``first`` is called
        in the claim's write turn, before the claim (see :meth:`Recorder.store_with`). With ``shared``, the limit is
        ``shared(span)`` instead, where span is the span of the pending runs' ids read again in the turn (see
        :func:`_pending_span`): runners sharing a batch size their claims by what the others left.

        Returns:
            ``(run_id, specification)`` of the claimed runs, in id order.
        """
        parameters = {
            "b_batch": batch_id,
            "b_limit": limit,
            "b_host": owner.host,
            "b_pid": owner.pid,
            "b_token": owner.token,
            "b_node": owner.node,
            "b_lease": self._lease_parameter(owner),
            "b_started": utc_now(),
        }

        def transaction(connection: Connection) -> list[tuple[Any, ...]]:
            if shared is not None:
                span = self._pending_span.execute_once(connection, {"b_batch": batch_id}).scalar_one()
                if not span:
                    return []
                parameters["b_limit"] = shared(span)
            return sorted(fetched(self._claim.execute_once(connection, parameters)))

        claimed = None
        with self.write_turn():
            first()
            with contextlib.suppress(TransientDatabaseError):  # tried again below, the turn let go between tries
                claimed = self._write(transaction, "claiming runs")
        if claimed is None:
            claimed = self._write(transaction, "claiming runs")
        return [(run_id, self._load_json(text)) for run_id, text in claimed]

    def renew_lease(self, owner: Owner) -> set[int]:
        """Push back the lease of every run ``owner`` still holds; return their ids (a lost claim is missing)."""
        statement = (
            update(runs)
            .where(runs.c.claim_token == owner.token, runs.c.status == RUNNING)
            .values(lease_expires_at=self._lease_end_expression())
            .returning(runs.c.id)
        )
        lease = {"b_lease": self._lease_parameter(owner)}
        return self._write(lambda connection: set(connection.execute(statement, lease).scalars()), "renewing the lease")

    def reclaim_abandoned(self, batch_id: int, owner: Owner) -> int:
        """Return to pending the batch's running runs whose owner is gone; return how many.

        An owner is gone when its lease has expired, or when it ran on this node and its process no longer exists
        (or is this process, under a token no live runner here holds).
        """
        here = {"b_batch": batch_id, "b_host": owner.host, "b_node": owner.node}

        def dead_tokens(connection: Connection) -> list[str]:
            running = fetched(self._claimers_here.execute_once(connection, here))
            return [token for pid, token in running if liveness.known_gone(owner.host, owner.node, pid, token)]

        def abandoned(connection: Connection) -> Any:
            return or_(runs.c.lease_expires_at < self._now(), runs.c.claim_token.in_(dead_tokens(connection)))

        def any_abandoned(connection: Connection) -> bool:
            if dead_tokens(connection):
                return True
            lease_ended = {"b_batch": batch_id, **self._clock_row()}
            return self._any_lease_ended.execute_once(connection, lease_ended).first() is not None

        def transaction(connection: Connection) -> int:
            gone = abandoned(connection)
            # Rows a stuck transaction holds (a machine that froze or died while writing them) are skipped, not
            # waited for: on PostgreSQL their lock lasts until the server drops that connection.
            candidates = (
                select(runs.c.id)
                .where(runs.c.batch_id == batch_id, runs.c.status == RUNNING, gone)
                .with_for_update(skip_locked=True)
            )
            result = connection.execute(
                update(runs)
                .where(runs.c.id.in_(candidates.scalar_subquery()), runs.c.status == RUNNING, gone)
                .values(status=PENDING, claim_token=None, lease_expires_at=None)
            )
            return result.rowcount

        if not self._read(any_abandoned, "looking for abandoned runs"):
            return 0
        return self._write(transaction, "reclaiming abandoned runs")

    def release(self, owner: Owner, unstarted: Collection[int]) -> int:
        """Return every unfinished claim of ``owner`` to pending; the ``unstarted`` ones are not counted as executed.

        Returns:
            How many claims were returned, ``unstarted`` ones included.
        """
        released = {"status": PENDING, "claim_token": None, "lease_expires_at": None}
        held = (runs.c.claim_token == owner.token) & (runs.c.status == RUNNING)

        def transaction(connection: Connection) -> int:
            count = 0
            if unstarted:
                count = connection.execute(
                    update(runs).where(held, runs.c.id.in_(unstarted)).values(attempts=runs.c.attempts - 1, **released)
                ).rowcount
            return count + connection.execute(update(runs).where(held).values(**released)).rowcount

        if not unstarted and not self._fetched(self._any_held, {"b_token": owner.token}, "looking for claims"):
            return 0  # holding nothing, no write turn
        return self._write(transaction, "releasing claims")

    def _now(self) -> Any:
        """The time leases are compared with: the server's clock on PostgreSQL, shared by every host."""
        return func.now() if self.engine.dialect.name == "postgresql" else utc_now()

    def _now_parameter(self) -> Any:
        """:meth:`_now` in a statement compiled once: on SQLite, the bound parameter ``b_now`` (see
        :meth:`_clock_row`)."""
        if self.engine.dialect.name == "postgresql":
            return func.now()
        return bindparam("b_now", type_=runs.c.lease_expires_at.type)

    def _clock_row(self) -> dict[str, Any]:
        """The value of ``b_now`` in :meth:`_now_parameter`, where it is bound."""
        return {} if self.engine.dialect.name == "postgresql" else {"b_now": utc_now()}

    def _lease_end_expression(self) -> Any:
        """When a lease taken now ends, given :meth:`_lease_parameter` as ``b_lease``."""
        if self.engine.dialect.name == "postgresql":
            return func.now() + bindparam("b_lease", type_=Interval())
        return bindparam("b_lease", type_=DateTime(timezone=True))

    def _lease_parameter(self, owner: Owner) -> Any:
        """The value of ``b_lease`` in :meth:`_lease_end_expression`."""
        lease = timedelta(seconds=owner.lease_seconds)
        return lease if self.engine.dialect.name == "postgresql" else utc_now() + lease

    # -- outcomes ------------------------------------------------------------------------------------------------

    def record(self, token: str, outcomes: Sequence[Outcome]) -> dict[int, Fate]:
        """Store finished runs claimed with ``token`` in one transaction; an outcome is stored only while the claim
        is still held under that token.

        Returns:
            The runs whose outcome was not stored, each with why: its claim was lost (taken over, or the run put
            back to pending) or the run was deleted meanwhile. Every other outcome is stored.

        Raises:
            DatabaseError: the database refused the group (nothing of it is stored).
            TransientDatabaseError: the connection dropped, or the database stayed busy, for longer than the
                retries cover.
        """
        return self.recording(token, outcomes)()

    def recording(self, token: str, outcomes: Sequence[Outcome]) -> Callable[[], dict[int, Fate]]:
        """Make the rows that store ``outcomes`` (see :meth:`record`) now, and return the call that writes them, to
        be made later: in a write turn taken for something else too, the rows are ready."""
        if not outcomes:
            return dict
        json_text = self._record.json_text
        plain: list[Outcome] = []
        rest: list[Outcome] = []
        for outcome in outcomes:
            (plain if _is_plain_completion(outcome) else rest).append(outcome)
        completions = self._record_completed.driver_rows(
            [
                {
                    "b_id": outcome.run_id,
                    "b_token": token,
                    "b_started": outcome.started_at,
                    "b_finished": outcome.finished_at,
                    "b_result": outcome.result_pickle,
                    "b_result_json": None if outcome.result_json is None else json_text(outcome.result_json),
                }
                for outcome in plain
            ]
        )
        others = self._record.driver_rows(
            [
                {
                    "b_id": outcome.run_id,
                    "b_token": token,
                    "b_status": COMPLETED if outcome.error_type is None else FAILED,
                    "b_extra_executions": outcome.executions - 1,
                    "b_started": outcome.started_at,
                    "b_finished": outcome.finished_at,
                    "b_result": outcome.result_pickle,
                    "b_result_json": None if outcome.result_json is None else json_text(outcome.result_json),
                    "b_error_type": outcome.error_type,
                    "b_error_message": outcome.error_message,
                    "b_traceback": outcome.traceback,
                    "b_output": outcome.output,
                }
                for outcome in rest
            ]
        )
        ids = [outcome.run_id for outcome in outcomes]
        completed = {outcome.run_id for outcome in outcomes if not outcome.failed}

        def transaction(connection: Connection) -> dict[int, Fate]:
            not_stored: dict[int, Fate] = {}
            stored = self._record_completed.execute(connection, completions) + self._record.execute(connection, others)
            if stored != len(outcomes):
                not_stored = dict.fromkeys(ids, Fate.DELETED)
                now_held = select(runs.c.id, runs.c.claim_token, runs.c.status).where(runs.c.id.in_(ids))
                for run_id, held_by, status in connection.execute(now_held):
                    if held_by == token and status in (COMPLETED, FAILED):
                        del not_stored[run_id]  # stored, here or by a try whose acknowledgement the connection lost
                    else:
                        not_stored[run_id] = Fate.CLAIM_LOST
            finished = completed - not_stored.keys()
            if finished and self._any_checkpoint.execute_once(connection, {}).first():  # then completed runs need none
                connection.execute(delete(checkpoints).where(checkpoints.c.run_id.in_(finished)))
            return not_stored

        return lambda: self._write(transaction, "storing outcomes")

    # -- what a worker writes while its run goes on (see smallab_db.worker_writes) -----------------------------------

    def report_progress(self, run_id: int, token: str, progress: float, total: float | None) -> bool:
        """Store a run's latest ``(progress, total)`` while ``token`` holds its claim; return whether it does."""
        statement = update(runs).where(_held(run_id, token)).values(progress=progress, progress_total=total)
        return self._write(lambda connection: connection.execute(statement).rowcount == 1, "storing progress")

    def write_output(self, run_id: int, token: str, output: str | None) -> bool:
        """Store a running run's output so far while ``token`` holds its claim; return whether it does."""
        statement = update(runs).where(_held(run_id, token)).values(output=output)
        return self._write(lambda connection: connection.execute(statement).rowcount == 1, "storing output")

    def save_checkpoint(self, run_id: int, token: str, state: bytes, keep: int) -> bool:
        """Add a checkpoint of a run and drop all but its ``keep`` newest, while ``token`` holds the run's claim.

        Returns:
            Whether ``token`` holds the claim; if not, nothing was written.
        """
        older = (
            select(checkpoints.c.id)
            .where(checkpoints.c.run_id == run_id)
            .order_by(checkpoints.c.id.desc())
            .offset(keep)
        )

        def transaction(connection: Connection) -> bool:
            if self._lock_claim(connection, run_id, token) is None:
                return False
            connection.execute(insert(checkpoints).values(run_id=run_id, created_at=utc_now(), state=state))
            connection.execute(delete(checkpoints).where(checkpoints.c.id.in_(older.scalar_subquery())))
            return True

        return self._write(transaction, "saving a checkpoint")

    def store_outputs(self, run_id: int, token: str, found: Sequence[ImportedRun]) -> bool:
        """Store runs that the run produced on the way (an overlapping-output experiment's outputs) as completed runs
        of its batch, as :meth:`import_completed` does, while ``token`` holds the run's claim.

        Returns:
            Whether ``token`` holds the claim; if not, nothing was written.
        """

        def transaction(connection: Connection) -> bool:
            batch_id = self._lock_claim(connection, run_id, token)
            if batch_id is None:
                return False
            self._import(connection, batch_id, found)
            return True

        return self._write(transaction, "storing produced runs")

    def _lock_claim(self, connection: Connection, run_id: int, token: str) -> int | None:
        """Lock the run's row if ``token`` holds its claim, so that no one takes the claim before the transaction
        ends; return the run's batch id, or None when the claim is not held."""
        statement = update(runs).where(_held(run_id, token)).values(claim_token=token).returning(runs.c.batch_id)
        return connection.execute(statement).scalar_one_or_none()

    # -- transactions --------------------------------------------------------------------------------------------

    def write_turn(self) -> AbstractContextManager[None]:
        """This store's turn to write (see :class:`WriteTurns`), held across the writes made in the block."""
        return self._turns.turn()

    def _write(self, transaction: Callable[[Connection], T], what: str) -> T:
        """Run ``transaction(connection)`` in a transaction that takes the write lock at once (``BEGIN IMMEDIATE``
        on SQLite), after this store's other writes; try it again whole while it fails with a transient error. In a
        write turn the caller holds, it is tried once: retrying would keep the turn from the others meanwhile."""

        def once() -> T:
            with self._turns.turn(), self._translated_errors(), self.engine.begin() as connection:
                return transaction(connection)

        if self._turns.held_here():
            return once()
        return retry_transient(once, f"{what} in {describe(self.engine.url)}")

    def _read(self, query: Callable[[Connection], T], what: str) -> T:
        """Run ``query(connection)`` in a transaction that only reads; try it again while it fails with a transient
        error."""

        def once() -> T:
            with self._reading() as connection:
                return query(connection)

        return retry_transient(once, f"{what} in {describe(self.engine.url)}")

    def _fetched(self, statement: DriverStatement, row: dict[str, Any], what: str) -> list[tuple[Any, ...]]:
        """The rows of ``statement`` run once with ``row``'s values, read as :meth:`_read` reads."""
        return self._read(lambda connection: fetched(statement.execute_once(connection, row)), what)

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


def _unlist(connection: Connection, batch_id: int) -> None:
    """Record that the batch's runs changed, so that they are no longer known to be a given list's."""
    values = {"listed_digest": None, "listed_count": None}
    connection.execute(update(registrations).where(registrations.c.batch_id == batch_id).values(values))


def _pending(batch_id: Any) -> Any:
    """The ids of the batch's pending runs (through the index on ``batch_id, status, id``); ``batch_id`` is the id
    or a bound parameter that gives it."""
    return select(runs.c.id).where(runs.c.batch_id == batch_id, runs.c.status == PENDING)


@functools.cache
def _registration_state(server_clock: bool) -> Any:
    """The read of :meth:`RunStore.registration`, built once: runners waiting for a list to be registered make it
    every few milliseconds. The turn's end is compared with ``b_now``, or the server's clock (PostgreSQL)."""
    r = registrations.c
    now = func.now() if server_clock else bindparam("b_now", type_=r.registering_until.type)
    return select(
        r.listed_digest,
        r.listed_count,
        r.registering_digest,
        r.registering_token,
        r.registering_host,
        r.registering_node,
        r.registering_pid,
        r.registering_until > now,
    ).where(r.batch_id == bindparam("b_batch", type_=r.batch_id.type))


def _pending_span() -> Any:
    """How many ids lie from the lowest pending run of the batch ``b_batch`` to its highest, both included; NULL when
    none is pending. Two index lookups however many are pending; as many as there are pending runs when they lie
    together, which they mostly do (they are taken lowest id first), and never fewer."""
    pending = _pending(bindparam("b_batch", type_=runs.c.batch_id.type))
    lowest = pending.with_only_columns(func.min(runs.c.id)).scalar_subquery()  # apart, each is one index lookup
    highest = pending.with_only_columns(func.max(runs.c.id)).scalar_subquery()
    return highest - lowest + 1


_PENDING_SPAN = select(_pending_span())


@functools.cache
def _outlook(server_clock: bool) -> Any:
    """One read for :meth:`RunStore.claim_outlook`, built once (it takes longer to build than to run): how many
    runners other than ``b_token``'s hold claims in the batch ``b_batch`` (see :func:`_other_claimers`), and the
    span of its pending runs' ids, 0 for none."""
    others = _other_claimers(server_clock).scalar_subquery()
    return select(others, func.coalesce(_pending_span(), 0))


def _other_claimers(server_clock: bool) -> Any:
    """The number of runners other than the one of token ``b_token`` that hold claims in the batch ``b_batch`` whose
    lease runs at ``b_now``, or on the server's clock (PostgreSQL).

    The claim tokens of running runs are walked one distinct token at a time through the index of running runs
    (each step the least token after the one before), so the cost grows with the runners, not with the runs they
    hold; counting distinct tokens over the batch's running runs read every one of them.
    """
    now = func.now() if server_clock else bindparam("b_now", type_=runs.c.lease_expires_at.type)
    running = runs.alias("running")
    tokens = (
        select(func.min(running.c.claim_token).label("token")).where(running.c.status == _RUNNING).cte(recursive=True)
    )
    later = runs.alias("later")
    next_token = (
        select(func.min(later.c.claim_token))
        .where(later.c.status == _RUNNING, later.c.claim_token > tokens.c.token)
        .scalar_subquery()
    )
    tokens = tokens.union_all(select(next_token).where(tokens.c.token.is_not(None)))
    held = runs.alias("held")
    # A token claims in one batch (a runner's call of one batch): the batch of any run it holds in time is its
    # batch. Looked up by token alone, so that the index of running runs is used, not the batch's running runs.
    batch_held_in_time = (
        select(held.c.batch_id)
        .where(held.c.claim_token == tokens.c.token, held.c.status == _RUNNING, held.c.lease_expires_at > now)
        .limit(1)
        .scalar_subquery()
    )
    batch_id, token = bindparam("b_batch", type_=runs.c.batch_id.type), bindparam("b_token", type_=String())
    return select(func.count()).select_from(tokens).where(tokens.c.token != token, batch_held_in_time == batch_id)


def _status_is(*statuses: str) -> Any:
    """The condition that a run's status is one of ``statuses``, written into the statement: it binds nothing."""
    return runs.c.status.in_([literal_column(f"'{status}'") for status in statuses])


def _is_plain_completion(outcome: Outcome) -> bool:
    """Whether an outcome is a run completed at its first execution that left no output to keep."""
    return outcome.error_type is None and outcome.executions == 1 and outcome.output is None


def _held(run_id: int, token: str) -> Any:
    """The condition that ``token`` holds the claim of a running run: the compare-and-set of every worker write."""
    return (runs.c.id == run_id) & (runs.c.claim_token == token) & (runs.c.status == RUNNING)


def _json_text(text: str | None) -> JSONText | None:
    return None if text is None else JSONText(text)
