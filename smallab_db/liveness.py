"""Whether the process holding a claim is still alive, for claims taken on this very machine.

A claim records the host name, a node identity (boot id and PID namespace, so that containers sharing a host
name are told apart) and the pid. Only when the node is this one can the pid be checked; otherwise the lease
decides.

For tests that simulate several machines with processes of one machine, ``$SMALLAB_DB_SIMULATED_HOST`` (read here
only) overrides both the host name and the node: processes given different names then treat each other as machines
of their own, whose claims only the lease can end.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

SIMULATED_HOST_ENV = "SMALLAB_DB_SIMULATED_HOST"

# Tokens of the runners alive in this process: a claim with this process's pid and another token is abandoned.
_LIVE_TOKENS: set[str] = set()


def this_host() -> str:
    """The host name recorded with a claim: the machine's, or ``$SMALLAB_DB_SIMULATED_HOST`` when a test sets it."""
    return os.environ.get(SIMULATED_HOST_ENV) or socket.gethostname()


@functools.cache
def this_node() -> str:
    """Identify this machine and PID namespace: pids are comparable only between claims of the same node."""
    simulated = os.environ.get(SIMULATED_HOST_ENV)
    if simulated:
        return f"simulated:{simulated}"
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "unknown"
    return f"{boot_id}/{namespace}"


def hold(token: str) -> None:
    """Record that a runner of this process holds claims under ``token``."""
    _LIVE_TOKENS.add(token)


def let_go(token: str) -> None:
    """Record that the runner holding ``token`` is done."""
    _LIVE_TOKENS.discard(token)


def known_gone(host: str | None, node: str | None, pid: int | None, token: str | None) -> bool:
    """Tell whether the holder of a claim or turn is known to have stopped: it ran on this node, and its process no
    longer runs (or is this process, under a token no runner here holds). Of a holder on another node nothing is
    known: only its lease can end its hold."""
    return host == this_host() and node == this_node() and not owner_alive(pid, token)


def owner_alive(pid: int | None, token: str | None) -> bool:
    """Tell whether the process ``pid`` of this node, which claimed under ``token``, is still running."""
    if pid is None:
        return False
    if pid == os.getpid():
        return token in _LIVE_TOKENS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A process that exited but was not reaped yet still answers ``kill(pid, 0)``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
