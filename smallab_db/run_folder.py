"""The ``experiment_runs/<name>/`` folder that a run through the smallab 2.x surface leaves, as 2.x wrote it:

```
experiment_runs/<name>/logs/<start time>/main.log         # the call's own lines, and the records of in-process runs
experiment_runs/<name>/logs/<start time>/<get_name>.log    # each run's records
experiment_runs/<name>/failed/<start time>/<get_name>.log  # a copy of the log of each run that failed
experiment_runs/<name>/tmp/<get_name>/                     # get_experiment_local_storage(), get_specification_...()
experiment_runs/<name>/experiments/…, completed.json, …    # the batch exported in the smallab2 layout, after each call
```

``<start time>`` is ``str(datetime.now())`` when the call started, as in 2.x. The database stays the record: the
export is rewritten from it at the end of every call, so scripts that read the files (or delete the folder) keep
working.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from smallab_db import export
from smallab_db.layouts import smallab2
from smallab_db.queries import RunQueries
from smallab_db.run_output import LOG_FORMAT, prepare_run_loggers

logger = logging.getLogger("smallab_db")


@dataclass(frozen=True)
class RunFolder:
    """The paths below ``<root>/<batch>`` for one ``run`` call; travels to workers with the task.

    Paths are kept as given (relative to the working directory by default), as smallab 2.x gave them.
    """

    root: str
    batch: str
    started: str

    @classmethod
    def for_call(cls, root: str | os.PathLike[str], batch: str) -> RunFolder:
        """The folder of a call starting now."""
        return cls(os.fspath(root), batch, str(datetime.now()))

    @property
    def batch_folder(self) -> str:
        return os.path.join(self.root, self.batch)

    @property
    def logs_folder(self) -> str:
        return os.path.join(self.batch_folder, "logs", self.started)

    @property
    def experiment_storage(self) -> str:
        return os.path.join(self.batch_folder, "tmp")

    def specification_storage(self, run_name: str) -> str:
        return os.path.join(self.experiment_storage, run_name)

    def log_file(self, run_name: str) -> Path:
        return Path(self.logs_folder, f"{run_name}.log")

    def keep_failed_log(self, run_name: str) -> None:
        """Copy a failed run's log beside the others of this call under ``failed/``, as 2.x did."""
        source = self.log_file(run_name)
        target = Path(self.batch_folder, "failed", self.started, f"{run_name}.log")
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


@contextmanager
def smallab2_files(queries: RunQueries, folder: RunFolder, force_pickle: bool) -> Iterator[None]:
    """Write ``main.log`` while the block runs, then export the batch below ``folder.root`` in the smallab2 layout
    (every result pickled when ``force_pickle``).

    Raises:
        ExportError: the export failed after the block succeeded (the runs are stored; export again to retry).
    """
    os.makedirs(folder.logs_folder, exist_ok=True)
    main_log = logging.FileHandler(os.path.join(folder.logs_folder, "main.log"), encoding="utf-8")
    main_log.setFormatter(logging.Formatter(LOG_FORMAT))
    loggers = prepare_run_loggers()
    loggers.addHandler(main_log)
    calls = logging.getLogger("smallab.runner")
    calls.info("running batch %r", folder.batch)
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        calls.info("batch %r: this call ended%s", folder.batch, "" if succeeded else " early")
        loggers.removeHandler(main_log)
        main_log.close()
        try:
            export.export_batch(queries, folder.batch, Path(folder.root), smallab2.NAME, pickle_results=force_pickle)
        except Exception as error:
            if succeeded:
                raise
            logger.error("smallab-db: exporting batch %r after the call failed failed too: %s", folder.batch, error)
