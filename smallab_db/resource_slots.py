"""Handing each running run one resource of a fixed list (a GPU, say), never one that another running run holds:
smallab 2.x's ``SimpleFixedResourceAllocatorRunner``.

Each resource has a lock file in a folder the runner creates for the batch call; a run takes the first resource
whose file it can lock (``flock``, exclusive) and releases it when it ends. The locks work between threads and
processes alike, and the kernel releases the lock of a process that dies, so a killed worker never keeps its
resource. The runner runs as many runs at once as there are resources, so a free one is always found at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_RETRY_SECONDS = 0.05


@dataclass(frozen=True)
class ResourceSlots:
    """The resources and the folder of their lock files; travels to workers with the task."""

    resources: tuple[Any, ...]
    folder: str

    @classmethod
    def create(cls, resources: Sequence[Any]) -> ResourceSlots:
        """Make the lock folder for ``resources``; :meth:`remove` it when the batch call ends."""
        return cls(tuple(resources), tempfile.mkdtemp(prefix="smallab-db-resources-"))

    def remove(self) -> None:
        """Remove the lock folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    @contextmanager
    def holding(self) -> Iterator[Any]:
        """Hold a resource no other running run holds while the block runs; yield it."""
        while True:
            for index, resource in enumerate(self.resources):
                descriptor = os.open(os.path.join(self.folder, str(index)), os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(descriptor)
                    continue
                try:
                    yield resource
                finally:
                    os.close(descriptor)  # releases the lock
                return
            time.sleep(_RETRY_SECONDS)  # every resource is held: a run that just ended is releasing its own
