"""Running one specification: what a worker (in-process, thread, process or Dask) does, keeping what the run writes
and logs as its output (:mod:`smallab_db.run_output`). No database here, but for what a running run writes through
:mod:`smallab_db.worker_writes`, the one exception, documented there: its output so far
(:mod:`smallab_db.live_output`), and a :class:`RunTask`'s checkpoints and progress."""

from __future__ import annotations

import abc
import pickle
import traceback
from datetime import datetime
from typing import Any

from smallab_db.codec import queryable_json, storable_text
from smallab_db.errors import ExperimentError, RemoteExperimentError
from smallab_db.experiment import ExperimentMain, Specification
from smallab_db.live_output import kept_live
from smallab_db.records import Outcome, utc_now
from smallab_db.run_output import OutputTail, keeping_output
from smallab_db.worker_writes import RunLink


class RunTask(abc.ABC):
    """An experiment callable that needs to know which claimed run it executes, to checkpoint it, report its
    progress and keep its logs (smallab 2.x experiments, see :mod:`smallab_db.run_task`)."""

    @abc.abstractmethod
    def run(self, link: RunLink, specification: Specification, output: OutputTail) -> Any:
        """Run one specification as the claimed run ``link``, writing what it logs to ``output``; return its
        result."""

    def check_result(self, result: Any) -> None:
        """Raise :class:`ExperimentError` unless ``result`` can be stored as the run's result: a dict."""
        check_result_is_dict(result)


Runnable = ExperimentMain | RunTask


def execute(main: Runnable, link: RunLink, specification: Specification, in_worker: bool) -> Outcome:
    """Run ``main(specification)`` and capture its result or its failure, and its output; never raises for the
    experiment's errors.

    Args:
        main: the experiment's callable, or a :class:`RunTask`.
        link: the claimed run: its id is passed back in the outcome; its output is written while it runs.
        specification: what to run.
        in_worker: the outcome travels back from another process, so it must not carry the result object twice
            nor an exception that cannot be pickled.
    """
    started_at = utc_now()
    output = OutputTail()
    with keeping_output(output), kept_live(link, output):
        outcome = _outcome(main, link, specification, in_worker, output, started_at)
    outcome.output = output.text()
    return outcome


def _outcome(
    main: Runnable,
    link: RunLink,
    specification: Specification,
    in_worker: bool,
    output: OutputTail,
    started_at: datetime,
) -> Outcome:
    try:
        if isinstance(main, RunTask):
            result = main.run(link, specification, output)
            main.check_result(result)
        else:
            result = main(specification)
            check_result_is_dict(result)
        try:
            result_pickle = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise ExperimentError(_unpicklable_result_message(error)) from error
    except (Exception, SystemExit) as error:
        return failure(link.run_id, started_at, error, in_worker)
    return Outcome(
        run_id=link.run_id,
        started_at=started_at,
        finished_at=utc_now(),
        result_pickle=result_pickle,
        result_json=queryable_json(result),
        result=None if in_worker else result,
    )


def check_result_is_dict(result: Any) -> None:
    """Raise :class:`ExperimentError` unless ``result`` is a dict."""
    if not isinstance(result, dict):
        raise ExperimentError(
            f"main must return a dict, but returned {type(result).__name__} {result!r:.80}: "
            "wrap the value, for example {'value': ...}"
        )


def failure(run_id: int, started_at: datetime, error: BaseException, in_worker: bool) -> Outcome:
    """Return the outcome of a run that raised ``error``, with its type, message and traceback.

    The traceback is kept as text and dropped from the exception, so that the frames of ``main`` and their locals
    are not kept alive until the batch ends (:meth:`Outcome.raised` attaches the text again).
    """
    error_type = storable_text(f"{type(error).__module__}.{type(error).__qualname__}".removeprefix("builtins."))
    message = storable_text(_text_of(error))
    text = storable_text("".join(traceback.format_exception(error)))
    _drop_tracebacks(error)
    if in_worker and not _survives_pickling(error):
        error = RemoteExperimentError(f"{error_type}: {message}")
    return Outcome(
        run_id=run_id,
        started_at=started_at,
        finished_at=utc_now(),
        error_type=error_type,
        error_message=message,
        traceback=text,
        exception=error,
    )


def _unpicklable_result_message(error: Exception) -> str:
    if "__main__" in str(error):
        return (
            f"the result of main cannot be pickled in a worker process ({type(error).__name__}: {error}): it holds "
            "an object of a class defined in your script (__main__); move that class into a module, or run with "
            "num_parallel=1"
        )
    return (
        f"the result of main cannot be pickled ({type(error).__name__}: {error}): "
        "return only picklable values (numbers, strings, lists, dicts, arrays)"
    )


def _text_of(error: BaseException) -> str:
    """``str(error)``, or a stand-in when the exception's ``__str__`` itself raises."""
    try:
        return str(error)
    except Exception as broken:
        return f"<the message of this {type(error).__name__} could not be read: {type(broken).__name__}>"


def _drop_tracebacks(error: BaseException | None, seen: set[int] | None = None) -> None:
    seen = set() if seen is None else seen
    if error is None or id(error) in seen:
        return
    seen.add(id(error))
    error.__traceback__ = None
    _drop_tracebacks(error.__cause__, seen)
    _drop_tracebacks(error.__context__, seen)


def _survives_pickling(error: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return False
    return True
