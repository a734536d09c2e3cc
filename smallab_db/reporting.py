"""Reporting stored runs: the tally, the progress bar and the per-run hooks, in a thread of their own."""

from __future__ import annotations

import pickle
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from smallab_db.experiment import Result, Specification
from smallab_db.hooks.calling import HookCaller
from smallab_db.records import Fate, Verdict
from smallab_db.summary import Tally

SpecificationHook = Callable[[Specification, Result], Any]
FailureHook = Callable[[BaseException, Specification], Any]
_STOP = object()


class Reporter:
    """Counts each verdict in ``tally``, advances ``progress`` and calls the run's hook, in the order the runs were
    stored, from a thread of its own: a slow hook (a mail server, say) never delays storing results.

    Hooks see only what was stored: ``on_complete(specification, result)`` for a completed run,
    ``on_failure(exception, specification)`` for a failed one; a run whose outcome was not stored calls neither.
    """

    def __init__(
        self,
        tally: Tally,
        progress: tqdm[Any],
        on_complete: SpecificationHook | None,
        on_failure: FailureHook | None,
        hooks: HookCaller,
    ) -> None:
        self._tally = tally
        self._progress = progress
        self._on_complete = on_complete
        self._on_failure = on_failure
        self._hooks = hooks
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="smallab-db-reporter", daemon=True)
        self._thread.start()

    def deliver(self, verdicts: list[Verdict]) -> None:
        """Queue verdicts to report; called from the thread that stored them (the runner's, the recorder's watchdog,
        or the runner's for outcomes a worker stored)."""
        if self._on_complete is None:  # nothing needs the results any more: do not keep them queued
            for verdict in verdicts:
                verdict.outcome.result = None
                verdict.outcome.result_pickle = None
        self._queue.put(verdicts)

    def deliver_completed(self, runs: list[tuple[int, Specification]]) -> None:
        """Queue ``(run_id, specification)`` of runs completed and stored by a worker, whose results no hook takes
        (see :class:`smallab_db.records.StoredRuns`)."""
        self._queue.put(_Completed(runs))

    def close(self) -> None:
        """Report every queued verdict and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if isinstance(item, _Completed):
                self._tally.add_completed(item.runs)
                self._progress.update(len(item.runs))
            else:
                assert isinstance(item, list)
                for verdict in item:
                    self._report(verdict)
            if not self._progress.disable:
                self._progress.set_postfix_str(f"completed={self._tally.completed} failed={self._tally.failed}")

    def _report(self, verdict: Verdict) -> None:
        self._tally.add(verdict)
        outcome = verdict.outcome
        if verdict.fate in (Fate.STORED, Fate.STORED_AS_FAILURE):
            if outcome.failed and self._on_failure is not None:
                self._call_above_the_bar(self._on_failure, outcome.raised(), outcome.specification)
            elif not outcome.failed and self._on_complete is not None:
                result = outcome.result
                if result is None:
                    assert outcome.result_pickle is not None
                    result = pickle.loads(outcome.result_pickle)
                self._call_above_the_bar(self._on_complete, outcome.specification, result)
        self._progress.update()

    def _call_above_the_bar(self, hook: Callable[..., Any], *arguments: Any) -> None:
        """Call a hook with the progress bar cleared, so that what it prints (``print``, logging) comes out on lines
        of its own above the bar, which is drawn again below."""
        if self._progress.disable:
            self._hooks.call(hook, *arguments)
            return
        with tqdm.external_write_mode():
            self._hooks.call(hook, *arguments)


@dataclass(slots=True)
class _Completed:
    """Runs completed and stored by a worker, queued to be reported."""

    runs: list[tuple[int, Specification]]
