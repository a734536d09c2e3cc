"""What a researcher writes: an experiment whose ``main`` runs one specification."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, cast

from smallab_db.errors import ExperimentError

Specification = dict[str, Any]  # one run's settings: what ``main`` is called with
Result = dict[str, Any]  # what ``main`` returns for one run
ExperimentMain = Callable[[Specification], Result]


class Experiment(abc.ABC):
    """An experiment: subclass it and implement :meth:`main`."""

    @abc.abstractmethod
    def main(self, specification: Specification) -> Result:
        """Run one specification and return its result, a picklable dict."""


def experiment_main(experiment: Experiment | ExperimentMain) -> ExperimentMain:
    """Return the callable that runs one specification of ``experiment``.

    Raises:
        ExperimentError: ``experiment`` is neither an :class:`Experiment` instance nor a callable.
    """
    if isinstance(experiment, Experiment):
        return experiment.main
    if isinstance(experiment, type) and issubclass(experiment, Experiment):
        raise ExperimentError(
            f"experiment must be an instance, but got the class {experiment.__name__}: pass {experiment.__name__}()"
        )
    if callable(experiment):
        return cast(ExperimentMain, experiment)
    raise ExperimentError(
        f"experiment must be an Experiment or a callable taking a specification dict, but got "
        f"{type(experiment).__name__} {experiment!r:.80}"
    )
