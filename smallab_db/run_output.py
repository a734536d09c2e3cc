"""A run's output: the tail of what it logged, kept while it runs and stored with its outcome in ``runs.output``.

smallab 2.x experiments log to the logger named by ``get_logger_name()`` (``smallab.<name>``). While a run goes on,
one handler on the ``smallab`` logger of the process routes each record of that logger (and of its children) to the
run: into its :class:`OutputTail`, into its 2.x log file, and to standard error when asked. Routing by logger name
keeps runs apart when several run in threads of one process, and creates no logger per run.

The tail keeps the newest :data:`MAX_OUTPUT_CHARACTERS` characters; when older ones were dropped, the stored text
begins with a line saying how many. A later change can write the run's standard output and error into the same tail.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from smallab_db.codec import storable_text

MAX_OUTPUT_CHARACTERS = 1_000_000
RUN_LOGGERS = "smallab"  # smallab 2.x's logger names: "smallab." + get_name(specification)
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # smallab 2.x's format


class OutputTail:
    """The newest :data:`MAX_OUTPUT_CHARACTERS` characters written to it; safe to write from several threads."""

    def __init__(self, limit: int = MAX_OUTPUT_CHARACTERS) -> None:
        self._limit = limit
        self._chunks: deque[str] = deque()
        self._size = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        """Append ``text``, dropping the oldest characters beyond the limit."""
        with self._lock:
            self._chunks.append(text)
            self._size += len(text)
            while self._size > self._limit:
                oldest = self._chunks.popleft()
                excess = self._size - self._limit
                if len(oldest) > excess:
                    self._chunks.appendleft(oldest[excess:])
                    self._size -= excess
                    self._dropped += excess
                else:
                    self._size -= len(oldest)
                    self._dropped += len(oldest)

    def text(self) -> str | None:
        """Return what is kept, in a form every database stores, or None when nothing was written."""
        with self._lock:
            if not self._chunks:
                return None
            kept = "".join(self._chunks)
            if self._dropped:
                kept = (
                    f"[smallab-db: the first {self._dropped} characters of this run's output were dropped; "
                    f"the last {self._limit} are kept]\n{kept}"
                )
        return storable_text(kept)


class _RunLog:
    """Where one run's records go: its tail, its log file (open while it runs) and maybe standard error."""

    def __init__(self, tail: OutputTail, log_file: Path | None, echo: bool) -> None:
        self.tail = tail
        self.file: TextIO | None = None
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            self.file = log_file.open("a", encoding="utf-8", errors="backslashreplace")
        self.echo = echo

    def write(self, line: str) -> None:
        self.tail.write(line + "\n")
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()
        if self.echo:
            tqdm.write(line, file=sys.stderr)


class _Router(logging.Handler):
    """The handler on the ``smallab`` logger that hands each record to the runs logging under its name."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.runs: dict[str, list[_RunLog]] = {}
        self._runs_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        targets = self._targets(record.name)
        if not targets:
            return
        try:
            line = self.format(record)
            for target in targets:
                target.write(line)
        except Exception:
            self.handleError(record)

    def _targets(self, name: str) -> list[_RunLog]:
        with self._runs_lock:
            while name:
                if name in self.runs:
                    return list(self.runs[name])
                name = name.rpartition(".")[0]
        return []

    def add(self, name: str, run: _RunLog) -> None:
        with self._runs_lock:
            self.runs.setdefault(name, []).append(run)

    def remove(self, name: str, run: _RunLog) -> None:
        with self._runs_lock:
            self.runs[name].remove(run)
            if not self.runs[name]:
                del self.runs[name]


_router = _Router()


def prepare_run_loggers() -> logging.Logger:
    """Set up the ``smallab`` logger as smallab 2.x did (level DEBUG, records not passed to the root logger), with
    the router on it; return it."""
    logger = logging.getLogger(RUN_LOGGERS)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if _router not in logger.handlers:
        logger.addHandler(_router)
    return logger


@contextmanager
def capturing(logger_name: str, tail: OutputTail, log_file: Path | None, echo: bool) -> Iterator[None]:
    """Route the records of logger ``logger_name`` (and its children) into ``tail`` and ``log_file`` (appended to;
    closed when the block ends), and to standard error when ``echo``, while the block runs."""
    prepare_run_loggers()
    run = _RunLog(tail, log_file, echo)
    _router.add(logger_name, run)
    try:
        yield
    finally:
        _router.remove(logger_name, run)
        if run.file is not None:
            run.file.close()
