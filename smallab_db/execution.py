"""Running one specification: what a worker (in-process, thread, process or Dask) does. No database here."""

from __future__ import annotations

import json
import pickle
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smallab_db.errors import ExperimentError, RemoteExperimentError
from smallab_db.experiment import ExperimentMain, Specification


class ExperimentTraceback(Exception):
    """The traceback of an experiment's exception, kept as text and attached as the exception's ``__cause__``."""

    def __str__(self) -> str:
        return f"\n\n{self.args[0]}"


@dataclass(slots=True)
class Outcome:
    """What running one specification produced: a pickled result, or an error with its traceback."""

    run_id: int
    started_at: datetime
    finished_at: datetime
    result_pickle: bytes | None = None
    result_json: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    exception: BaseException | None = None
    result: dict[str, Any] | None = None
    executions: int = 1  # more than 1 when a worker died and the run was executed again alone

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


def execute(main: ExperimentMain, run_id: int, specification: Specification, in_worker: bool) -> Outcome:
    """Run ``main(specification)`` and capture its result or its failure; never raises for the experiment's errors.

    Args:
        main: the experiment's callable.
        run_id: the run's id, passed back in the outcome.
        specification: what to run.
        in_worker: the outcome travels back from another process, so it must not carry the result object twice
            nor an exception that cannot be pickled.
    """
    started_at = datetime.now(UTC)
    try:
        result = main(specification)
        if not isinstance(result, dict):
            raise ExperimentError(
                f"main must return a dict, but returned {type(result).__name__} {result!r:.80}: "
                "wrap the value, for example {'value': ...}"
            )
        try:
            result_pickle = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise ExperimentError(_unpicklable_result_message(error)) from error
    except (Exception, SystemExit) as error:
        return failure(run_id, started_at, error, in_worker)
    return Outcome(
        run_id=run_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        result_pickle=result_pickle,
        result_json=result_json_text(result),
        result=None if in_worker else result,
    )


def result_json_text(result: dict[str, Any]) -> str | None:
    """Return the result as JSON text when it is JSON-serialisable (what ``result_json`` stores), else None."""
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # a lone surrogate in a string serialises, but no database can store it
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return None
    return text


def failure(run_id: int, started_at: datetime, error: BaseException, in_worker: bool) -> Outcome:
    """Return the outcome of a run that raised ``error``, with its type, message and traceback.

    The traceback is kept as text and dropped from the exception, so that the frames of ``main`` and their locals
    are not kept alive until the batch ends (:meth:`Outcome.raised` attaches the text again).
    """
    error_type = f"{type(error).__module__}.{type(error).__qualname__}".removeprefix("builtins.")
    message = _storable(str(error))
    text = _storable("".join(traceback.format_exception(error)))
    _drop_tracebacks(error)
    if in_worker and not _survives_pickling(error):
        error = RemoteExperimentError(f"{error_type}: {message}")
    return Outcome(
        run_id=run_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
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


def _storable(text: str) -> str:
    """Text a database can store: PostgreSQL's text cannot hold NUL characters."""
    return text.replace("\x00", "\\x00")


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
