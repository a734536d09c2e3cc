"""Leaving the objects alive when a batch starts out of the garbage collector's passes while it runs.

Python's cyclic garbage collector walks every object it tracks at each full pass, and a batch's runs, as they come
and go, start such passes: each walked the caller's list of specifications, the batch's, and every module loaded,
about a tenth of the time of short runs. :func:`gc.freeze` moves the objects alive now to a generation that no pass
walks. They are still freed as usual when their last reference goes; only a reference cycle among them waits for the
end of the block, which puts them back (:func:`gc.unfreeze`) to be collected as before. A program that froze objects
itself (before forking workers, say) is left as it is.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_blocks = 0  # the blocks of this process (threads, nested calls) inside frozen() that froze


@contextmanager
def frozen() -> Iterator[None]:
    """Keep the objects alive now out of the garbage collector's passes for the block."""
    global _blocks
    with _lock:
        mine = _blocks > 0 or gc.get_freeze_count() == 0
        if mine:
            gc.freeze()
            _blocks += 1
    try:
        yield
    finally:
        if mine:
            with _lock:
                _blocks -= 1
                if _blocks == 0:
                    gc.unfreeze()
