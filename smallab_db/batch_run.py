"""One call of ``ExperimentRunner.run``: register the specifications, then claim, run, store and report the batch's
pending runs until none is left."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL
from tqdm import tqdm

from smallab_db import dispatch, heap, run_output
from smallab_db.claims import Claims
from smallab_db.core_slots import CoreSlots, core_slots
from smallab_db.execution import Runnable, RunTask
from smallab_db.experiment import Specification
from smallab_db.hooks.calling import HookCaller
from smallab_db.lease import LeaseKeeper
from smallab_db.progress_display import ProgressDisplay
from smallab_db.recorder import Recorder
from smallab_db.records import Outcome, Owner, StoredRuns, Verdict
from smallab_db.registration import Registration
from smallab_db.reporting import FailureHook, Reporter, SpecificationHook
from smallab_db.schema import PENDING, RUNNING
from smallab_db.store import RunStore
from smallab_db.summary import RunSummary, Tally
from smallab_db.worker_writes import RunLink

BatchHook = Callable[[list[Specification]], Any]
BatchFailureHook = Callable[[list[BaseException], list[Specification]], Any]


@dataclass
class Hooks:
    """The hooks a batch calls: per run as it is stored, and once when the call ends."""

    on_specification_complete: SpecificationHook | None = None
    on_specification_failure: FailureHook | None = None
    on_batch_complete: BatchHook | None = None
    on_batch_failure: BatchFailureHook | None = None


@dataclass
class BatchRun:
    """The settings of one call of :meth:`ExperimentRunner.run`; :meth:`run` carries it out."""

    store: RunStore
    database: URL  # the store's URL, with its password: workers connect with it
    name: str
    main: Runnable
    lease_seconds: float
    num_parallel: int | None
    backend: str | None
    show_progress: bool
    hooks: Hooks
    stop_at_first_failure: bool = False  # store the first failure, stop the batch, raise it
    dashboard: bool = False  # a bar per running run, from the progress runs store
    run_name: Callable[[Specification], str] = str
    keep_key_order: bool = False  # store specifications with their keys in the order given, not sorted

    def run(self, specifications: list[Specification], rerun_all: bool) -> RunSummary:
        """Register ``specifications`` in the batch (validated already), run every pending run of the batch, and
        return what was stored; the batch hooks are called at the end.

        Raises:
            DatabaseError: the database failed for longer than the retries cover; unfinished claims are released.
            KeyboardInterrupt: after storing what finished and releasing the rest.
        """
        with heap.frozen():  # the garbage collector's passes walk only what the batch makes
            return self._run(specifications, rerun_all)

    def _run(self, specifications: list[Specification], rerun_all: bool) -> RunSummary:
        registration = Registration(self.store, self.name, self.lease_seconds, self.keep_key_order)
        batch_id, completed = registration.register(specifications, rerun_all)
        tally = Tally(completed)
        pending = self.store.count(batch_id, PENDING) if self.show_progress else None  # the bar's total
        if pending == 0:
            print(self._nothing_to_run(batch_id, len(set(completed))), file=sys.stderr)
        del specifications, completed  # the runs are in the database now; free the lists while the batch runs
        hooks = HookCaller()
        run_output.install()
        progress = tqdm(
            total=pending,
            desc=self.name,
            unit="run",
            disable=not self.show_progress or pending == 0 or sys.stderr is None,  # 2>&- (no standard error): no bar
            leave=True,
        )
        display = None
        if self.dashboard or isinstance(self.main, RunTask):
            display = ProgressDisplay(self.store, batch_id, self.name, progress, self.dashboard, self.run_name)
            display.start()
        slots = core_slots(self.database) if dispatch.runs_here(self.num_parallel, self.backend) else None
        try:
            while self._run_pending(batch_id, tally, progress, hooks, slots):
                pass
        finally:
            if slots is not None:  # held until now, or let go already when the claims found nothing left
                slots.let_go()
            if display is not None:
                display.close()
            progress.close()
        summary = tally.summary()
        hooks.call(self.hooks.on_batch_complete, summary.completed)
        if summary.failed:
            hooks.call(self.hooks.on_batch_failure, summary.exceptions, summary.failed)
        return summary

    def _nothing_to_run(self, batch_id: int, completed: int) -> str:
        """What to say instead of an empty progress bar."""
        running = self.store.count(batch_id, RUNNING)
        if running:
            return (
                f"{self.name}: nothing to run here: {completed} runs are already completed, {running} are running "
                "in other runners"
            )
        return (
            f"{self.name}: all {completed} runs are already completed, nothing to run "
            "(continue_from_last_run=False runs them again)"
        )

    def _run_pending(
        self, batch_id: int, tally: Tally, progress: tqdm[Any], hooks: HookCaller, slots: CoreSlots | None
    ) -> bool:
        """Claim and run pending runs until none is left, storing and reporting each as it finishes; while runs are
        short, only holding one of ``slots``.

        Returns:
            Whether claims this call did not know of were found held at the end (their taking committed while the
            connection dropped): they are pending again, so the caller runs once more.
        """
        owner = Owner(lease_seconds=self.lease_seconds)
        keeper = LeaseKeeper(self.store, owner, on_renewal=lambda held: claims.retain(held))
        reporter = Reporter(
            tally, progress, self.hooks.on_specification_complete, self.hooks.on_specification_failure, hooks
        )
        recorder = Recorder(self.store, owner, on_verdicts=reporter.deliver)
        parallelism = self.num_parallel or os.cpu_count() or 1
        claims = Claims(
            self.store, batch_id, owner, parallelism, keeper.renew, claim_with=recorder.store_with, slots=slots
        )
        keeper.start()
        link = functools.partial(RunLink, self.database, token=owner.token)
        keep_results = self.hooks.on_specification_complete is not None
        outcomes = dispatch.outcomes(
            self.main, claims, link, self.num_parallel, self.backend, self.stop_at_first_failure, keep_results
        )
        unknown_claims = 0
        interrupted = False
        first_failure: Outcome | None = None
        try:
            for item in outcomes:
                if isinstance(item, StoredRuns):
                    reporter.deliver_completed(claims.finish_all(item.run_ids))
                    continue
                outcome = item
                outcome.specification = claims.finish(outcome.run_id)
                if outcome.fate is None:
                    recorder.submit(outcome)
                else:  # stored by the worker that ran it
                    reporter.deliver([Verdict(outcome, outcome.fate)])
                if self.stop_at_first_failure and outcome.failed:
                    first_failure = outcome
                    break
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            outcomes.close()  # stops joblib's workers when leaving early
            try:
                recorder.close()
            finally:
                reporter.close()
                try:
                    unknown_claims = claims.release()
                finally:
                    keeper.stop()
            if interrupted:
                tqdm.write(
                    f"smallab-db: interrupted; {tally.completed} completed and {tally.failed} failed runs are "
                    "stored, unfinished runs are pending again: run the same call again to resume",
                    file=sys.stderr,
                )
        if first_failure is not None:  # stored now: the recorder was closed above
            raise first_failure.raised()
        return unknown_claims > 0
