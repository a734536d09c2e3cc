"""The output of runs in progress, written to the database while they run, so that ``smallab-db logs --follow`` shows
it as it comes.

One thread per process wakes every :data:`WRITE_INTERVAL` seconds and writes the tail of each run that has gone on
since its previous wake-up and whose output changed since it last wrote it: a run shorter than that is written only
with its outcome. A run is handed to the thread at its first output, so one that writes nothing costs next to
nothing here. The writes go through
:mod:`smallab_db.worker_writes`, so nothing is written once the run's claim is lost, and a write that fails is
simply tried again at the next wake-up: the outcome stores the whole tail in any case. Once :func:`kept_live`
ends, no write of its run is under way or will start.
"""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType

from smallab_db.run_output import OutputTail
from smallab_db.worker_writes import RunLink

WRITE_INTERVAL = 1.0  # seconds


class _LiveRun:
    """One run's tail as the writer sees it; ``lock`` is held while its output is written."""

    __slots__ = ("link", "tail", "lock", "seen", "written_version", "ended")

    def __init__(self, link: RunLink, tail: OutputTail) -> None:
        self.link = link
        self.tail = tail
        self.lock = threading.Lock()
        self.seen = False  # the writer woke up once already while the run went on
        self.written_version = 0
        self.ended = False


class _Writer:
    """The thread of this process that writes the output of its runs in progress."""

    def __init__(self) -> None:
        self._runs: set[_LiveRun] = set()
        self._lock = threading.Lock()
        self._started = False

    def forget_inherited(self) -> None:
        """In a forked child: the thread is the parent's, and so are the runs."""
        self.__init__()  # type: ignore[misc]

    def add(self, run: _LiveRun) -> None:
        with self._lock:
            if run.ended:  # a thread of the experiment wrote its first line after the run
                return
            if not self._started:
                threading.Thread(target=self._write_forever, name="smallab-db output writer", daemon=True).start()
                self._started = True
            self._runs.add(run)

    def remove(self, run: _LiveRun) -> None:
        with self._lock:
            run.ended = True
            self._runs.discard(run)
        with run.lock:  # waits for a write of this run under way; the next ones see that it ended
            pass

    def _write_forever(self) -> None:
        while True:
            time.sleep(WRITE_INTERVAL)
            with self._lock:
                runs = list(self._runs)
            for run in runs:
                self._write(run)

    @staticmethod
    def _write(run: _LiveRun) -> None:
        with run.lock:
            if run.ended:
                return
            if not run.seen:
                run.seen = True
                return
            version = run.tail.version
            if version == run.written_version:
                return
            try:
                run.link.write_output(run.tail.text())
            except Exception:  # the database failed, or the claim was lost: the outcome decides what is stored
                return
            run.written_version = version


_writer = _Writer()
os.register_at_fork(after_in_child=_writer.forget_inherited)


class kept_live:  # noqa: N801  (a context manager, named as one made with contextlib; a class, as it is cheaper)
    """Write ``tail`` as the output of run ``link`` about every second while the block runs and it changes."""

    def __init__(self, link: RunLink, tail: OutputTail) -> None:
        self._run = _LiveRun(link, tail)

    def __enter__(self) -> None:
        self._run.tail.on_first_write = self._first_output

    def _first_output(self) -> None:
        _writer.add(self._run)

    def __exit__(self, *exc_info: type[BaseException] | BaseException | TracebackType | None) -> None:
        tail = self._run.tail
        tail.on_first_write = None
        if tail.version:  # it wrote, so the writer may know the run (a first write counts before it calls back)
            _writer.remove(self._run)
