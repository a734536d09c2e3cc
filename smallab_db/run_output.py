"""A run's output: the tail of what it writes to standard output and error and logs, kept while it runs and stored
with its outcome in ``runs.output``.

Standard output and error: the first batch or run in a process replaces ``sys.stdout`` and ``sys.stderr`` by
:class:`RoutedStream` objects, which write everything to the original stream (the terminal sees it as before) and,
when written during a run, to that run's :class:`OutputTail` too. The run is found through a context variable, set
by :func:`keeping_output` in the thread that executes the run, so runs in threads of one process stay apart, and
threads outside any run write only to the original stream.

``logging``: it also wraps the log record factory; a record made during a run (at a level its logger
lets through) goes to the run's tail, formatted as :data:`LOG_FORMAT`, unless a handler will print it on a routed
stream, which keeps it already (the record is kept once).

smallab 2.x experiments log to the logger named by ``get_logger_name()`` (``smallab.<name>``). While a run goes on,
one handler on the ``smallab`` logger of the process routes each record of that logger (and of its children) to the
run: into its tail, into its 2.x log file, and to standard error when asked. Routing by logger name creates no
logger per run.

The tail keeps the newest :data:`MAX_OUTPUT_CHARACTERS` characters; when older ones were dropped, the stored text
begins with a line saying how many (see :func:`split_dropped`).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm

from smallab_db.codec import storable_text

MAX_OUTPUT_CHARACTERS = 1_000_000
RUN_LOGGERS = "smallab"  # smallab 2.x's logger names: "smallab." + get_name(specification)
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # smallab 2.x's format
_DROPPED = re.compile(
    r"\[smallab-db: the first (\d+) characters of this run's output were dropped; the last \d+ are kept\]\n"
)


class OutputTail:
    """The newest :data:`MAX_OUTPUT_CHARACTERS` characters written to it; safe to write from several threads."""

    def __init__(self, limit: int = MAX_OUTPUT_CHARACTERS) -> None:
        self._limit = limit
        self._chunks: deque[str] = deque()
        self._size = 0
        self._dropped = 0
        self._lock = threading.Lock()
        self.version = 0  # how many writes it had: changed output has a new version
        self.on_first_write: Callable[[], None] | None = None  # called after the first write

    def write(self, text: str) -> None:
        """Append ``text``, dropping the oldest characters beyond the limit."""
        text = storable_text(text)  # here, so that the kept characters are the stored ones
        with self._lock:
            self.version += 1
            first = self.version == 1
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
        if first and self.on_first_write is not None:
            self.on_first_write()

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
        return kept


def split_dropped(stored: str) -> tuple[int, str]:
    """Split a stored output into how many characters were dropped from its start, and the characters kept."""
    match = _DROPPED.match(stored)
    return (int(match.group(1)), stored[match.end() :]) if match else (0, stored)


_current_tail: ContextVar[OutputTail | None] = ContextVar("smallab_db_current_tail", default=None)


class keeping_output:  # noqa: N801  (a context manager, named as one made with contextlib; a class, as it is cheaper)
    """Keep in ``tail`` what the block, in this thread or context, writes to standard output and error and logs."""

    def __init__(self, tail: OutputTail) -> None:
        self._tail = tail

    def __enter__(self) -> None:
        install()
        self._token = _current_tail.set(self._tail)

    def __exit__(self, *exc_info: type[BaseException] | BaseException | TracebackType | None) -> None:
        _current_tail.reset(self._token)


@contextmanager
def _not_kept() -> Iterator[None]:
    """Write the block's output only to where it goes anyway (it was kept already)."""
    token = _current_tail.set(None)
    try:
        yield
    finally:
        _current_tail.reset(token)


class RoutedStream:
    """``sys.stdout`` or ``sys.stderr`` once a run started in the process: writes go to the original stream and, during
    a run, to its tail. Everything else (``isatty``, ``fileno``, ``encoding``...) is the original stream's."""

    def __init__(self, original: TextIO | None) -> None:
        self.original = original  # None when the process has no such stream (started with 2>&-, say)

    def write(self, text: str) -> int:
        tail = _current_tail.get()
        if tail is None:
            return len(text) if self.original is None else self.original.write(text)
        tail.write(text)
        if self.original is None:
            return len(text)
        token = _current_tail.set(None)  # a stream that wraps this one and is wrapped by another must not keep it twice
        try:
            return self.original.write(text)
        finally:
            _current_tail.reset(token)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.original is not None:
            self.original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class _RecordKeeper:
    """The log record factory once a run started in the process, around the one before it: it also writes the
    records made during a run to the run's tail, unless a handler will print them on a routed stream."""

    def __init__(self, wrapped: Callable[..., logging.LogRecord]) -> None:
        self.wrapped = wrapped
        self.formatter = logging.Formatter(LOG_FORMAT)

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        tail = _current_tail.get()
        if tail is None:
            return self.wrapped(*args, **kwargs)
        with _not_kept():  # a factory that wraps this one and is wrapped by another must not keep it twice
            record = self.wrapped(*args, **kwargs)
        if not _printed_on_routed_stream(record):
            try:
                line = self.formatter.format(record)
            except Exception:  # arguments that do not fit the message: logging reports it when a handler formats it
                line = f"{record.name} - {record.levelname} - {record.msg!r} {record.args!r}"
            tail.write(line + "\n")
        return record


def _printed_on_routed_stream(record: logging.LogRecord) -> bool:
    """Whether a handler that ``record`` reaches writes it to a :class:`RoutedStream` or to a run's tail."""
    logger: logging.Logger | None = logging.getLogger(record.name) if record.name != "root" else logging.root
    found = False
    while logger is not None:
        for handler in logger.handlers:
            found = True
            if record.levelno >= handler.level and _keeps(handler, record.name):
                return True
        if not logger.propagate:
            break
        logger = logger.parent
    last_resort = logging.lastResort  # what prints a record no handler takes: on sys.stderr, read at each record
    return (
        not found
        and last_resort is not None
        and record.levelno >= last_resort.level
        and isinstance(sys.stderr, RoutedStream)
    )


def _keeps(handler: logging.Handler, name: str) -> bool:
    if isinstance(handler, _Router):
        return bool(handler.targets(name))
    return isinstance(handler, logging.StreamHandler) and isinstance(handler.stream, RoutedStream)


_install_lock = threading.Lock()


def install() -> None:
    """Route this process's standard output and error and its log records, unless they are already (again, when
    something replaced them since). Runs do it; a batch does it first, so that its progress bar writes to the routed
    standard error, which tqdm then knows as ``sys.stderr`` and clears before other lines are written."""
    if _installed():
        return
    with _install_lock:
        if not isinstance(sys.stdout, RoutedStream):
            sys.stdout = RoutedStream(sys.stdout)
        if not isinstance(sys.stderr, RoutedStream):
            sys.stderr = RoutedStream(sys.stderr)
        factory = logging.getLogRecordFactory()
        if not isinstance(factory, _RecordKeeper):
            logging.setLogRecordFactory(_RecordKeeper(factory))


def _installed() -> bool:
    return (
        isinstance(sys.stdout, RoutedStream)
        and isinstance(sys.stderr, RoutedStream)
        and isinstance(logging.getLogRecordFactory(), _RecordKeeper)
    )


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
            with _not_kept():
                tqdm.write(line, file=sys.stderr)


class _Router(logging.Handler):
    """The handler on the ``smallab`` logger that hands each record to the runs logging under its name."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.runs: dict[str, list[_RunLog]] = {}
        self._runs_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        targets = self.targets(record.name)
        if not targets:
            return
        try:
            line = self.format(record)
            for target in targets:
                target.write(line)
        except Exception:
            self.handleError(record)

    def targets(self, name: str) -> list[_RunLog]:
        """The runs that records of logger ``name`` go to."""
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
