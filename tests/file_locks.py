"""Looking at a lock file from a test: whether some open file holds its ``flock``."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def lock_state(path: Path | str) -> str:
    """Whether the lock of the file at ``path`` is "held" (by any open file: one of this process too) or "free"."""
    descriptor = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    finally:
        os.close(descriptor)  # which lets go of the lock, if it took it
    return "free"
