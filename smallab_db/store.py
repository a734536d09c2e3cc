"""The one module that writes rows: batches, pending runs, claims, leases and outcomes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy import (
    String,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from smallab_db import liveness
from smallab_db.bulk import DriverStatement, fetched, json_loader
from smallab_db.codec import JSONText
from smallab_db.database import describe
from smallab_db.errors import SchemaError, TransientDatabaseError
from smallab_db.experiment import Specification
from smallab_db.queries import NEWEST_RUN_ID, KnownRuns, RunQueries
from smallab_db.records import ClaimOutlook, Fate, Holder, ImportedRun, Outcome, Owner, RegistrationState, utc_now
from smallab_db.schema import COMPLETED, FAILED, PENDING, RUNNING, batches, checkpoints, registrations, runs
from smallab_db.specification import HASH_SCHEME
from smallab_db.store_statements import (
    LeaseClock,
    StoreStatements,
    insert_ignoring_duplicates,
    registering_columns,
    requeued_statuses,
)
from smallab_db.transient import retry_transient
from smallab_db.wal_checkpoints import WalCheckpoints
from smallab_db.write_turns import WriteTurns

T = TypeVar("T")


class RunStore(RunQueries):
    """The one place that writes rows (and, through :class:`RunQueries`, reads them), over one engine.

    Methods are safe to call from several threads: the writes of one store take turns on a lock of this process
    (so its own threads never wait in SQLite's busy handler), and each is retried whole while it fails with a
    transient error (a dropped connection, a busy database).
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        checkpoints = WalCheckpoints(engine) if engine.dialect.name == "sqlite" else None
        self._turns = WriteTurns(engine.url, checkpoints.before_write if checkpoints else lambda: None)
        self._load_json = json_loader(engine.dialect)
        self._clock = LeaseClock(server=engine.dialect.name == "postgresql")
        self._statements = StoreStatements(engine.dialect, self._clock)

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
            self._statements.insert_batch.execute_once(connection, new)
            batch_id, scheme = fetched(self._statements.batch_named.execute_once(connection, {"b_name": name}))[0]
            self._statements.insert_registrations.execute_once(connection, {**row, "b_batch": batch_id})
            return batch_id, scheme

        found = self._fetched(self._statements.batch_found, {"b_name": name}, f"finding batch {name!r}")
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
        requeued = requeued_statuses(rerun_all)
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

        json_text = self._statements.insert_pending.json_text
        hashes = list(missing)
        # made before the transaction, so that the write lock is held briefly
        rows = self._statements.insert_pending.driver_rows(
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
            self._statements.insert_pending.execute(connection, inserting)
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
        parameters = {"b_batch": batch_id, **self._clock.now_row()}
        with self._reading() as connection:
            rows = fetched(self._statements.registration_state.execute_once(connection, parameters))
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
            .values(registering_columns(self._clock))
        )
        row = self._registering_row((digest, owner))
        taken = self._write(lambda connection: connection.execute(statement, row).rowcount, "taking a registering turn")
        return bool(taken == 1)

    def _registering_row(self, registering: tuple[str, Owner] | None) -> dict[str, Any]:
        """The values of the columns of :func:`~smallab_db.store_statements.registering_columns` that say the runner
        ``owner`` of ``registering = (digest, owner)`` registers the list ``digest`` now; all None for ``registering``
        None."""
        if registering is None:
            return dict.fromkeys(("b_digest", "b_token", "b_host", "b_node", "b_pid", "b_lease"))
        digest, owner = registering
        return {
            "b_digest": digest,
            "b_token": owner.token,
            "b_host": owner.host,
            "b_node": owner.node,
            "b_pid": owner.pid,
            "b_lease": self._clock.lease_parameter(owner),
        }

    def renew_registration_turn(self, batch_id: int, owner: Owner) -> None:
        """Push back the end of ``owner``'s turn to register, if it still has it."""
        statement = (
            update(registrations)
            .where(registrations.c.batch_id == batch_id, registrations.c.registering_token == owner.token)
            .values(registering_until=self._clock.lease_end())
        )
        lease = {"b_lease": self._clock.lease_parameter(owner)}
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
            self._statements.lock_registrations.execute_once(connection, batch)
            self._statements.end_registration.execute_once(connection, {**batch, "b_token": owner.token})
            if listed is None:
                return
            digest, count = listed
            if self._statements.batch_size.execute_once(connection, batch).scalar_one() == count:
                self._statements.record_listed.execute_once(connection, {**batch, "b_digest": digest, "b_count": count})

        self._write(transaction, "ending a turn to register")

    def register_listed(self, batch_id: int, listed_count: int, rerun_all: bool) -> list[int] | None:
        """Register again the list recorded as the batch's runs (see :meth:`end_registration_turn`) without looking
        at its specifications: queue failed runs again, and completed ones too with ``rerun_all``.

        Returns:
            The ids of the completed runs that stay so, as :meth:`register` does; None, having done nothing, when
            the batch no longer has ``listed_count`` runs.
        """
        requeued = requeued_statuses(rerun_all)
        in_batch = runs.c.batch_id == batch_id
        batch = {"b_batch": batch_id}
        with self._reading() as connection:
            if self._statements.batch_size.execute_once(connection, batch).scalar_one() != listed_count:
                return None
            completed_ids = (
                [] if rerun_all else list(self._statements.completed_ids.execute_once(connection, batch).scalars())
            )
            requeue = self._statements.any_requeued[rerun_all].execute_once(connection, batch).first() is not None
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
            connection.execute(insert_ignoring_duplicates(self.engine.dialect, runs), missing)
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
        claims in it, ``owner``'s runner included, and the span of its pending runs' ids (see
        :func:`smallab_db.store_statements._pending_span`), 0 when none is pending."""
        parameters = {"b_batch": batch_id, "b_token": owner.token, **self._clock.now_row()}
        ((others, pending),) = self._fetched(self._statements.outlook, parameters, "looking for pending runs")
        return ClaimOutlook(pending=int(pending), runners=1 + int(others))

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
        :func:`smallab_db.store_statements._pending_span`): runners sharing a batch size their claims by what the
        others left.

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
            "b_lease": self._clock.lease_parameter(owner),
            "b_started": utc_now(),
        }

        def transaction(connection: Connection) -> list[tuple[Any, ...]]:
            if shared is not None:
                span = self._statements.pending_span.execute_once(connection, {"b_batch": batch_id}).scalar_one()
                if not span:
                    return []
                parameters["b_limit"] = shared(span)
            return sorted(fetched(self._statements.claim.execute_once(connection, parameters)))

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
            .values(lease_expires_at=self._clock.lease_end())
            .returning(runs.c.id)
        )
        lease = {"b_lease": self._clock.lease_parameter(owner)}
        return self._write(lambda connection: set(connection.execute(statement, lease).scalars()), "renewing the lease")

    def reclaim_abandoned(self, batch_id: int, owner: Owner) -> int:
        """Return to pending the batch's running runs whose owner is gone; return how many.

        An owner is gone when its lease has expired, or when it ran on this node and its process no longer exists
        (or is this process, under a token no live runner here holds).
        """
        here = {"b_batch": batch_id, "b_host": owner.host, "b_node": owner.node}

        def dead_tokens(connection: Connection) -> list[str]:
            running = fetched(self._statements.claimers_here.execute_once(connection, here))
            return [
                token
                for pid, token in running
                if token is not None and liveness.known_gone(owner.host, owner.node, pid, token)
            ]

        def abandoned(connection: Connection) -> Any:
            return or_(runs.c.lease_expires_at < self._clock.now(), runs.c.claim_token.in_(dead_tokens(connection)))

        def any_abandoned(connection: Connection) -> bool:
            if dead_tokens(connection):
                return True
            lease_ended = {"b_batch": batch_id, **self._clock.now_row()}
            return self._statements.any_lease_ended.execute_once(connection, lease_ended).first() is not None

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

        if not unstarted and not self._fetched(
            self._statements.any_held, {"b_token": owner.token}, "looking for claims"
        ):
            return 0  # holding nothing, no write turn
        return self._write(transaction, "releasing claims")

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
        json_text = self._statements.record.json_text
        plain: list[Outcome] = []
        rest: list[Outcome] = []
        for outcome in outcomes:
            (plain if _is_plain_completion(outcome) else rest).append(outcome)
        completions = self._statements.record_completed.driver_rows(
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
        others = self._statements.record.driver_rows(
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
            statements = self._statements
            stored = statements.record_completed.execute(connection, completions)
            stored += statements.record.execute(connection, others)
            if stored != len(outcomes):
                not_stored = dict.fromkeys(ids, Fate.DELETED)
                now_held = select(runs.c.id, runs.c.claim_token, runs.c.status).where(runs.c.id.in_(ids))
                for run_id, held_by, status in connection.execute(now_held):
                    if held_by == token and status in (COMPLETED, FAILED):
                        del not_stored[run_id]  # stored, here or by a try whose acknowledgement the connection lost
                    else:
                        not_stored[run_id] = Fate.CLAIM_LOST
            finished = completed - not_stored.keys()
            # most batches keep no checkpoints: then completed runs need none deleted
            if finished and self._statements.any_checkpoint.execute_once(connection, {}).first():
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


def _unlist(connection: Connection, batch_id: int) -> None:
    """Record that the batch's runs changed, so that they are no longer known to be a given list's."""
    values = {"listed_digest": None, "listed_count": None}
    connection.execute(update(registrations).where(registrations.c.batch_id == batch_id).values(values))


def _is_plain_completion(outcome: Outcome) -> bool:
    """Whether an outcome is a run completed at its first execution that left no output to keep."""
    return outcome.error_type is None and outcome.executions == 1 and outcome.output is None


def _held(run_id: int, token: str) -> Any:
    """The condition that ``token`` holds the claim of a running run: the compare-and-set of every worker write."""
    return (runs.c.id == run_id) & (runs.c.claim_token == token) & (runs.c.status == RUNNING)


def _json_text(text: str | None) -> JSONText | None:
    return None if text is None else JSONText(text)
