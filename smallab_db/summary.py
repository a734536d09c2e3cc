"""What one call of ``ExperimentRunner.run`` did, built run by run from what the database stored."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from smallab_db.experiment import Specification
from smallab_db.records import Fate, Verdict


@dataclass
class RunSummary:
    """What one call of :meth:`ExperimentRunner.run` did.

    ``completed`` and ``failed`` hold the specifications this call ran and stored, each once with its latest
    stored outcome; ``exceptions`` the failures' exceptions in the order of ``failed``; ``skipped`` how many given
    specifications were already completed and were not run by this call; ``not_stored`` the runs this call executed
    whose outcome the database did not take: another runner had taken over their claim (their lease had lapsed),
    they were put back to pending, or they were deleted meanwhile.
    """

    completed: list[Specification] = field(default_factory=list)
    failed: list[Specification] = field(default_factory=list)
    exceptions: list[BaseException] = field(default_factory=list)
    skipped: int = 0
    not_stored: list[Specification] = field(default_factory=list)


class Tally:
    """Counts verdicts by run id, so that a run stored twice in one call (put back to pending and run again)
    counts once, with its latest outcome, and two runs with specifications equal in Python (``{"x": 1}`` and
    ``{"x": True}``) count as two. It keeps each run's specification and exception, not its result."""

    def __init__(self, completed_at_registration: Collection[int]) -> None:
        self._completed_at_registration = set(completed_at_registration)
        self._latest: dict[int, _Entry] = {}
        self.completed = 0
        self.failed = 0

    def add(self, verdict: Verdict) -> None:
        """Count a verdict, replacing an earlier one of the same run."""
        outcome = verdict.outcome
        assert outcome.specification is not None, "the runner adds each outcome's specification"
        stored = verdict.fate in (Fate.STORED, Fate.STORED_AS_FAILURE)
        self._put(outcome.run_id, _Entry(outcome.specification, outcome.raised() if outcome.failed else None, stored))

    def add_completed(self, runs: list[tuple[int, Specification]]) -> None:
        """Count ``(run_id, specification)`` of runs completed and stored, replacing earlier verdicts of the same
        runs."""
        for run_id, specification in runs:
            self._put(run_id, _Entry(specification, None, True))

    def _put(self, run_id: int, entry: _Entry) -> None:
        self._count(self._latest.get(run_id), -1)
        self._latest[run_id] = entry
        self._count(entry, 1)

    def summary(self) -> RunSummary:
        """Return the summary of every verdict counted."""
        summary = RunSummary(skipped=len(self._completed_at_registration - self._latest.keys()))
        for entry in self._latest.values():
            if not entry.stored:
                summary.not_stored.append(entry.specification)
            elif entry.exception is not None:
                summary.failed.append(entry.specification)
                summary.exceptions.append(entry.exception)
            else:
                summary.completed.append(entry.specification)
        return summary

    def _count(self, entry: _Entry | None, step: int) -> None:
        if entry is None or not entry.stored:
            return
        if entry.exception is None:
            self.completed += step
        else:
            self.failed += step


@dataclass(slots=True)
class _Entry:
    specification: Specification
    exception: BaseException | None
    stored: bool
