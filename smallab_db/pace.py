"""How many runs to hand a worker at once: enough that handing them over costs little per run, few enough that the
chunk's results come back (and are stored) soon after its first run finished."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from smallab_db.experiment import Specification
from smallab_db.records import Outcome

CHUNK_SECONDS = 0.05  # the work a chunk holds: its first result waits at most about this long to be stored
MAX_CHUNK = 1000
# Runs shorter than this are stored by the worker that ran them: storing them would keep the calling process busier
# than running them keeps a worker. Longer ones are stored by the calling process, which has the time, so that a
# worker only runs.
WORKERS_STORE_BELOW_SECONDS = 0.001


class Pace:
    """The time runs take, from the chunks that came back, and the chunk size it calls for.

    The estimate rises at once to a chunk's mean time per run and falls by at most three quarters per chunk, so that
    slower runs shrink the chunks immediately and a fast stretch grows them quickly. Until a chunk has come back,
    chunks hold one run.
    """

    def __init__(self) -> None:
        self._seconds_per_run: float | None = None

    def measure(self, runs: int, seconds: float) -> None:
        """Take a chunk's ``runs``, which took ``seconds`` in all, into the estimate."""
        if not runs:
            return
        mean = seconds / runs
        previous = self._seconds_per_run
        self._seconds_per_run = mean if previous is None else max(mean, previous / 4)

    def chunk_size(self) -> int:
        """How many runs the next chunk holds."""
        if self._seconds_per_run is None:
            return 1
        return max(1, min(MAX_CHUNK, int(CHUNK_SECONDS / max(self._seconds_per_run, 1e-9))))

    def runs_are_short(self) -> bool:
        """Whether runs are so short that workers should store their outcomes (see
        :data:`WORKERS_STORE_BELOW_SECONDS`); not until a chunk has come back."""
        return self._seconds_per_run is not None and self._seconds_per_run < WORKERS_STORE_BELOW_SECONDS

    def chunks(self, claimed: Iterator[tuple[int, Specification]]) -> Iterator[list[tuple[int, Specification]]]:
        """Group claimed runs in chunks of the size the pace calls for when each chunk is made."""
        while chunk := list(itertools.islice(claimed, self.chunk_size())):
            yield chunk


def seconds_taken(outcomes: Sequence[Outcome]) -> float:
    """The time runs took in all, each from its start to its end: what :meth:`Pace.measure` takes."""
    return sum(((outcome.finished_at - outcome.started_at).total_seconds() for outcome in outcomes), 0.0)
