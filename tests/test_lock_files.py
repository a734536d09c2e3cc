"""A child forked without exec keeps none of smallab-db's lock files open: it closes its copies as it starts, so
that a lock taken on one after the fork is its parent's alone, and closing one of them again in the child leaves
alone the file that reused its number."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import processes
from file_locks import lock_state

from smallab_db.lock_files import LockFile


def test_a_lock_file_open_when_a_child_is_forked_is_its_parent_s_alone(tmp_path: Path) -> None:
    path = tmp_path / "a-lock"
    lock_file = LockFile(path)  # open, not locked yet: a runner waiting for a core slot
    processes.fork_waiting()  # lives until the test ends
    fcntl.flock(lock_file.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert lock_state(path) == "held"
    lock_file.close()
    assert lock_state(path) == "free"


def test_a_forked_child_does_not_close_a_lock_file_twice(tmp_path: Path) -> None:
    lock_file = LockFile(tmp_path / "a-lock")

    def close_after_its_number_is_reused() -> bool:
        other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)  # the lowest free number: the one just closed
        lock_file.close()  # the parent's object, in the child
        os.fstat(other)  # raises if the close above closed it
        return other == lock_file.descriptor

    assert processes.fork_waiting(close_after_its_number_is_reused)
    lock_file.close()
