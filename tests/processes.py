"""Starting child processes in tests: each in a process group of its own, killed with its children when the test
ends (``conftest.py`` does that after every test), or at once when a call's time limit passes."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

_started: list[subprocess.Popen[Any]] = []
_forked: list[int] = []  # the process ids of children forked without exec


def spawn(command: Sequence[str], **options: Any) -> subprocess.Popen[Any]:
    """Start ``command`` in a new process group and remember it, so that the test's end kills it and its children.

    ``options`` are :class:`subprocess.Popen`'s, except ``start_new_session``, which is always set.
    """
    process: subprocess.Popen[Any] = subprocess.Popen(list(command), start_new_session=True, **options)
    _started.append(process)
    return process


def run(
    command: Sequence[str], timeout: float, input: Any = None, check: bool = False, **options: Any
) -> subprocess.CompletedProcess[Any]:
    """Run ``command`` to its end, like :func:`subprocess.run` with ``capture_output=True``; on timeout kill its
    whole process group (workers included) and raise :class:`subprocess.TimeoutExpired`.

    Raises:
        subprocess.CalledProcessError: ``check`` is set and the command exited with a non-zero status.
    """
    stdin = subprocess.PIPE if input is not None else subprocess.DEVNULL
    process = spawn(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)
    try:
        out, err = process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        process.communicate()
        raise
    if check and process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, process.args, out, err)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def fork_waiting() -> int:
    """Fork a child without exec, as ``multiprocessing`` does, that waits, running nothing, until it is killed (when
    the test ends); return its process id once the child runs (the fork's handlers in the child have run)."""
    running, says_running = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test
        try:
            os.write(says_running, b"r")
            signal.pause()
        finally:
            os._exit(0)
    _forked.append(pid)
    os.close(says_running)
    try:
        assert os.read(running, 1) == b"r"
    finally:
        os.close(running)
    return pid


def kill_group(process: subprocess.Popen[Any], signal_number: int = signal.SIGKILL) -> None:
    """Send a signal to a spawned process and every process in its group."""
    try:
        os.killpg(process.pid, signal_number)
    except (ProcessLookupError, PermissionError):
        pass


def kill_all() -> None:
    """Kill every process group started since the last call (thawing stopped ones first) and reap the leaders, and
    every forked child."""
    while _forked:
        pid = _forked.pop()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    while _started:
        process = _started.pop()
        kill_group(process, signal.SIGCONT)
        kill_group(process)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL is the kernel's
            pass
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
