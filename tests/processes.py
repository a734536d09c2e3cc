"""Starting child processes in tests: each in a process group of its own, killed with its children when the test
ends (``conftest.py`` does that after every test), or at once when a call's time limit passes; and children forked
without exec, killed when the test ends."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

_started: list[subprocess.Popen[Any]] = []
_forked: list[tuple[int, int]] = []  # children forked without exec: (process id, the pipe end they wait on)


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


def fork_waiting(in_child: Callable[[], bool] = lambda: True) -> bool:
    """Fork a child without exec, as ``multiprocessing`` does, that calls ``in_child`` and then waits, running
    nothing, until it is killed when the test ends, or this process exits; return what ``in_child`` returned (False
    if it raised), once the child has called it (the fork's handlers in the child have run before)."""
    said, say = os.pipe()
    alive, keep_alive = os.pipe()  # the child waits to read what only this process may write: nothing, ever
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test
        try:
            for _, earlier in _forked:
                os.close(earlier)  # so that each child sees this process end, not the others
            os.close(keep_alive)
            try:
                answer = in_child()
            except BaseException:
                answer = False
            os.write(say, b"1" if answer else b"0")
            os.read(alive, 1)
        finally:
            os._exit(0)
    _forked.append((pid, keep_alive))
    os.close(alive)
    os.close(say)
    try:
        return os.read(said, 1) == b"1"
    finally:
        os.close(said)


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
        pid, keep_alive = _forked.pop()
        os.close(keep_alive)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):  # reaped already
            pass
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
