"""The records that travel between the steps of a batch: who holds a claim, what a run produced, and what became of
it in the database."""

from __future__ import annotations

import enum
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from smallab_db import liveness
from smallab_db.experiment import Result, Specification


def utc_now() -> datetime:
    """Return the current time in UTC, as stored in every timestamp column."""
    return datetime.now(UTC)


def stored_utc(moment: datetime | None) -> datetime | None:
    """A timestamp read back with its zone: PostgreSQL gives one; SQLite's text is UTC without it."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: host, node and pid for a quick liveness check, a token that only this runner knows."""

    lease_seconds: float
    host: str = field(default_factory=liveness.this_host)
    pid: int = field(default_factory=os.getpid)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    node: str = field(default_factory=liveness.this_node)


@dataclass(frozen=True)
class ClaimOutlook:
    """What a runner's next claim in a batch will find, read before it takes a write turn."""

    pending: int  # how many ids its pending runs span, as many as they are when they lie together; 0 for none
    runners: int  # the runners holding live claims in the batch, the reader's included


@dataclass(frozen=True)
class Holder:
    """Who holds a turn, as recorded in the database: enough to tell whether it is known to have stopped."""

    host: str | None
    node: str | None
    pid: int | None
    token: str

    def known_gone(self) -> bool:
        """Whether it ran on this node and its process is gone (see :func:`smallab_db.liveness.known_gone`)."""
        return liveness.known_gone(self.host, self.node, self.pid, self.token)


@dataclass(frozen=True)
class RegistrationState:
    """A batch's row of registrations: the list its runs are, and the runner registering a list now, if any.

    Attributes:
        listed_digest: the digest of the specification list whose runs the batch held exactly when it was recorded
            (see :func:`smallab_db.specification.list_digest`); None when runs were added or deleted since.
        listed_count: how many runs that list has.
        registering_digest: the digest of the list a runner is registering now.
        registering: the holder of that turn, or None.
        registering_in_time: the turn's lease has not run out.
    """

    listed_digest: str | None = None
    listed_count: int | None = None
    registering_digest: str | None = None
    registering: Holder | None = None
    registering_in_time: bool = False


class ExperimentTraceback(Exception):
    """The traceback of an experiment's exception, kept as text and attached as the exception's ``__cause__``."""

    def __str__(self) -> str:
        return f"\n\n{self.args[0]}"


@dataclass(slots=True)
class Outcome:
    """What running one specification produced: a pickled result, or an error with its traceback.

    Workers fill in everything but ``specification``, which the calling process adds back, and ``fate``, which is set
    when the worker stored the outcome itself.
    """

    run_id: int
    started_at: datetime
    finished_at: datetime
    result_pickle: bytes | None = None
    result_json: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    exception: BaseException | None = None
    result: Result | None = None
    executions: int = 1  # more than 1 when a worker died and the run was executed again alone
    specification: Specification | None = None
    output: str | None = None  # the tail of what the run logged (see smallab_db.run_output)
    fate: Fate | None = None  # what the database made of it, when the worker that ran it stored it

    @property
    def failed(self) -> bool:
        """Whether the run failed."""
        return self.error_type is not None

    def raised(self) -> BaseException:
        """Return the exception of a failed run, with the worker's traceback attached when it lost its own."""
        assert self.exception is not None, "only a failed outcome has an exception"
        if self.exception.__traceback__ is None and self.exception.__cause__ is None and self.traceback:
            self.exception.__cause__ = ExperimentTraceback(self.traceback)
        return self.exception


class Fate(enum.Enum):
    """What the database made of an outcome."""

    STORED = "stored"  # as the outcome said: completed or failed
    STORED_AS_FAILURE = "stored as failure"  # the database refused the outcome; a ResultNotStoredError took its place
    CLAIM_LOST = "claim lost"  # another runner took the run over, or it was put back to pending: not stored
    DELETED = "deleted"  # the run was deleted (smallab-db rm) while it ran: not stored


@dataclass(slots=True)
class Verdict:
    """An outcome and its fate; for ``STORED_AS_FAILURE`` the outcome is the failure that was stored instead."""

    outcome: Outcome
    fate: Fate


@dataclass(slots=True)
class StoredRuns:
    """Runs that completed and that the worker which ran them stored, handed back by id alone: nothing else of them
    is needed (no hook takes their result), and ids cost next to nothing to send, where outcomes cost more to pickle
    than trivial runs take."""

    run_ids: list[int]


@dataclass(slots=True)
class ChunkReport:
    """What a worker hands back for a chunk of runs: the outcomes the calling process still has to handle, the runs
    it stored itself with nothing more to say, and what the chunk took, for the pace."""

    outcomes: list[Outcome]
    stored: StoredRuns
    seconds: float  # the time the chunk's runs took, each from its start to its end

    @property
    def runs(self) -> int:
        """How many runs the chunk held."""
        return len(self.outcomes) + len(self.stored.run_ids)


@dataclass(frozen=True)
class ImportedRun:
    """A completed run brought in from a folder tree."""

    spec_hash: str
    canonical: str
    result_pickle: bytes
    result_json: str | None
