"""The statements the store runs most, built and compiled once for a database's dialect when the store is made.

Compiling a statement costs more than running it, and SQLAlchemy's execution of a statement it has compiled before
costs several times what SQLite takes to run a short one. Each runner compiles these once, before its first write
turn: the statements of the first write turns (creating a batch, claiming, storing), so that those turns are not
slower than the others while the other runners wait for them, and the reads every runner makes as it starts, claims
and ends, which runners started together would otherwise compile all at once on shared cores. Statements made
rarely (renewing a lease, deleting runs) are built where they are used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import DateTime, Interval, String, bindparam, func, literal_column, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from smallab_db.bulk import DriverStatement
from smallab_db.errors import DatabaseError
from smallab_db.records import Owner, utc_now
from smallab_db.schema import COMPLETED, FAILED, PENDING, RUNNING, batches, checkpoints, registrations, runs

_RUNNING: Any = literal_column(f"'{RUNNING}'")  # written into a bulk statement: no value to bind per row
_ANY_CHECKPOINT = select(checkpoints.c.id).limit(1)  # most batches keep none: then none need deleting


@dataclass(frozen=True)
class LeaseClock:
    """The clock leases are measured by: the database server's on PostgreSQL (``server``), shared by every host; the
    runner's own on SQLite, whose runners share one host."""

    server: bool

    def now(self) -> Any:
        """Now, in a statement built for one use."""
        return func.now() if self.server else utc_now()

    def now_parameter(self) -> Any:
        """Now, in a statement compiled once: on SQLite the bound parameter ``b_now``, given by :meth:`now_row`."""
        return func.now() if self.server else bindparam("b_now", type_=runs.c.lease_expires_at.type)

    def now_row(self) -> dict[str, Any]:
        """The value of ``b_now`` in :meth:`now_parameter`, where it is bound."""
        return {} if self.server else {"b_now": utc_now()}

    def lease_end(self) -> Any:
        """When a lease taken now ends, given :meth:`lease_parameter` as ``b_lease``."""
        if self.server:
            return func.now() + bindparam("b_lease", type_=Interval())
        return bindparam("b_lease", type_=DateTime(timezone=True))

    def lease_parameter(self, owner: Owner) -> Any:
        """The value of ``b_lease`` in :meth:`lease_end` for ``owner``'s lease."""
        lease = timedelta(seconds=owner.lease_seconds)
        return lease if self.server else utc_now() + lease


class StoreStatements:
    """The store's statements compiled for ``dialect`` (see the module's docstring)."""

    def __init__(self, dialect: Dialect, clock: LeaseClock) -> None:
        # the run b_id, while the token b_token holds its claim
        held = (
            (runs.c.id == bindparam("b_id"))
            & (runs.c.claim_token == bindparam("b_token"))
            & (runs.c.status == _RUNNING)
        )
        self.record = DriverStatement(
            update(runs)
            .where(held)
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
            dialect,
        )
        # a run completed at its first execution that left no output, the common outcome: fewer values
        self.record_completed = DriverStatement(
            update(runs)
            .where(held)
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
            dialect,
        )
        candidates = (
            _pending(bindparam("b_batch"))
            .order_by(runs.c.id)
            .limit(bindparam("b_limit"))
            .with_for_update(skip_locked=True)
        )
        self.claim = DriverStatement(
            update(runs)
            .where(runs.c.id.in_(candidates.scalar_subquery()))
            .values(
                status=RUNNING,
                attempts=runs.c.attempts + 1,
                host=bindparam("b_host"),
                pid=bindparam("b_pid"),
                claim_token=bindparam("b_token"),
                claim_node=bindparam("b_node"),
                lease_expires_at=clock.lease_end(),
                started_at=bindparam("b_started"),
                finished_at=None,
                output=None,
            )
            .returning(runs.c.id, runs.c.specification),
            dialect,
        )
        self.pending_span = DriverStatement(_PENDING_SPAN, dialect)
        self.any_checkpoint = DriverStatement(_ANY_CHECKPOINT, dialect)
        self.insert_batch = DriverStatement(
            insert_ignoring_duplicates(dialect, batches).values(
                name=bindparam("b_name"), created_at=bindparam("b_created"), hash_scheme=bindparam("b_scheme")
            ),
            dialect,
        )
        self.batch_named = DriverStatement(
            select(batches.c.id, batches.c.hash_scheme).where(batches.c.name == bindparam("b_name")), dialect
        )
        self.insert_registrations = DriverStatement(  # a turn to register given, or None for each of its values
            insert_ignoring_duplicates(dialect, registrations).values(
                batch_id=bindparam("b_batch"), **registering_columns(clock)
            ),
            dialect,
        )
        # The reads every runner makes once or a few times, most of them while the other runners start or end too.
        self.outlook = DriverStatement(_outlook(clock.server), dialect)
        self.registration_state = DriverStatement(_registration_state(clock.server), dialect)
        self.batch_found = DriverStatement(
            select(batches.c.id, batches.c.hash_scheme)
            .join_from(batches, registrations)  # a batch is created with its row of registrations
            .where(batches.c.name == bindparam("b_name")),
            dialect,
        )
        in_batch = runs.c.batch_id == bindparam("b_batch", type_=runs.c.batch_id.type)
        self.batch_size = DriverStatement(select(func.count()).where(in_batch), dialect)
        self.completed_ids = DriverStatement(select(runs.c.id).where(in_batch, _status_is(COMPLETED)), dialect)
        self.any_requeued = {  # by rerun_all
            rerun_all: DriverStatement(
                select(runs.c.id).where(in_batch, _status_is(*requeued_statuses(rerun_all))).limit(1), dialect
            )
            for rerun_all in (False, True)
        }
        self.any_held = DriverStatement(
            select(runs.c.id).where(runs.c.claim_token == bindparam("b_token"), runs.c.status == _RUNNING).limit(1),
            dialect,
        )
        running = (runs.c.batch_id == bindparam("b_batch", type_=runs.c.batch_id.type)) & (runs.c.status == _RUNNING)
        self.claimers_here = DriverStatement(
            select(runs.c.pid, runs.c.claim_token)
            .distinct()
            .where(running, runs.c.host == bindparam("b_host"), runs.c.claim_node == bindparam("b_node")),
            dialect,
        )
        self.any_lease_ended = DriverStatement(
            select(runs.c.id).where(running, runs.c.lease_expires_at < clock.now_parameter()).limit(1), dialect
        )
        # The registering runner ends its turn while the others wait for it.
        r = registrations.c
        of_batch = r.batch_id == bindparam("b_batch", type_=r.batch_id.type)
        self.lock_registrations = DriverStatement(
            select(r.registering_token).where(of_batch).with_for_update(), dialect
        )
        ended = {f"registering_{column}": None for column in ("digest", "token", "host", "node", "pid", "until")}
        self.end_registration = DriverStatement(
            update(registrations).where(of_batch, r.registering_token == bindparam("b_token")).values(ended),
            dialect,
        )
        self.record_listed = DriverStatement(
            update(registrations)
            .where(of_batch)
            .values(listed_digest=bindparam("b_digest"), listed_count=bindparam("b_count")),
            dialect,
        )
        self.insert_pending = DriverStatement(
            insert_ignoring_duplicates(dialect, runs).values(
                batch_id=bindparam("b_batch"),
                spec_hash=bindparam("b_hash"),
                specification=bindparam("b_specification"),
                status=PENDING,
                attempts=0,
                created_at=bindparam("b_created"),
            ),
            dialect,
        )


def requeued_statuses(rerun_all: bool) -> tuple[str, ...]:
    """The statuses of the runs that registering a batch's list again queues again: failed ones, and completed ones
    too with ``rerun_all``."""
    return (FAILED, COMPLETED) if rerun_all else (FAILED,)


def registering_columns(clock: LeaseClock) -> dict[str, Any]:
    """A batch's row of registrations's columns that say which runner registers which list now, as bind parameters:
    ``b_digest``, ``b_token``, ``b_host``, ``b_node``, ``b_pid`` and ``b_lease``."""
    return {
        "registering_digest": bindparam("b_digest"),
        "registering_token": bindparam("b_token"),
        "registering_host": bindparam("b_host"),
        "registering_node": bindparam("b_node"),
        "registering_pid": bindparam("b_pid"),
        "registering_until": clock.lease_end(),
    }


def insert_ignoring_duplicates(dialect: Dialect, table: Any) -> Any:
    """An INSERT into ``table`` that skips rows whose unique key is taken already.

    Raises:
        DatabaseError: the database is neither SQLite nor PostgreSQL.
    """
    if dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    raise DatabaseError(f"smallab-db does not support the {dialect.name!r} database: use SQLite or PostgreSQL")


def _pending(batch_id: Any) -> Any:
    """The ids of the batch's pending runs (through the index on ``batch_id, status, id``); ``batch_id`` is the id
    or a bound parameter that gives it."""
    return select(runs.c.id).where(runs.c.batch_id == batch_id, runs.c.status == PENDING)


@functools.cache
def _registration_state(server_clock: bool) -> Any:
    """The read of ``RunStore.registration``, built once per process (building it takes longer than compiling it):
    runners waiting for a list to be registered make it every few milliseconds. The turn's end is compared with
    ``b_now``, or the server's clock (PostgreSQL)."""
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
    pending_ids = _pending(bindparam("b_batch", type_=runs.c.batch_id.type))
    lowest = pending_ids.with_only_columns(func.min(runs.c.id)).scalar_subquery()  # apart, each is one index lookup
    highest = pending_ids.with_only_columns(func.max(runs.c.id)).scalar_subquery()
    return highest - lowest + 1


_PENDING_SPAN = select(_pending_span())


@functools.cache
def _outlook(server_clock: bool) -> Any:
    """One read for ``RunStore.claim_outlook``, built once per process (building it takes longer than compiling and
    running it): how many runners other than ``b_token``'s hold claims in the batch ``b_batch`` (see
    :func:`_other_claimers`), and the span of its pending runs' ids, 0 for none."""
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
