"""Open descriptors of smallab-db's lock files (``<database>-lock``, ``<database>-cores/<core>``), which a child
forked without exec does not keep.

A ``flock`` belongs to an open file, which a child forked without exec (a ``multiprocessing`` pool an experiment
starts, with Linux's default start method) shares with its parent: a long-lived child would hold the lock after its
parent let go, every other runner waiting until the child exits. So every descriptor of a lock file is opened
through :class:`LockFile`, and a forked child closes all of them as it starts, which leaves each lock to the parent
(a lock on an open file lasts until every descriptor of it is closed). Opening and closing take turns with forking,
so that a child never inherits a descriptor this module does not know of, nor closes a number its parent had just
closed and given to another file. Only forks made through Python (``os.fork``, ``multiprocessing``) run the handler
that closes them; a child must not use its parent's runner either way (nor its database connections).
"""

from __future__ import annotations

import os
import threading

# Held while a descriptor is opened and recorded, or closed and forgotten, and across os.fork(); never while waiting
# for a lock. Reentrant: a signal handler of the thread holding it may open or close a lock file too.
_guard = threading.RLock()
_open: set[LockFile] = set()
_forking = threading.local()  # whether this thread took the guard for the fork it makes


class LockFile:
    """One open descriptor of a lock file; closed at once in a child forked without exec."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (creating it if need be) the file at ``path``.

        Raises:
            OSError: it cannot be opened.
        """
        with _guard:
            self.descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            _open.add(self)

    def close(self) -> None:
        """Close the descriptor, which lets go of its lock unless another descriptor of its open file holds it; in a
        forked child, whose start closed it already, this does nothing."""
        with _guard:
            if self in _open:
                try:
                    _open.remove(self)
                finally:  # even if Ctrl-C comes as it returns: a lock file held would stay held
                    os.close(self.descriptor)


def _take_guard_before_fork() -> None:
    _guard.acquire()  # Ctrl-C may stop it: the fork goes on, and the handlers after it then leave the guard be
    _forking.holds_guard = True


def _leave_guard_after_fork() -> None:
    if getattr(_forking, "holds_guard", False):
        _forking.holds_guard = False
        _guard.release()


def _close_every_one_in_child() -> None:
    for lock_file in _open:
        try:
            os.close(lock_file.descriptor)
        except OSError:  # closed by other means: nothing of its parent's to keep
            pass
    _open.clear()
    _leave_guard_after_fork()


os.register_at_fork(
    before=_take_guard_before_fork, after_in_parent=_leave_guard_after_fork, after_in_child=_close_every_one_in_child
)
