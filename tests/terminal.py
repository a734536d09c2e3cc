"""A real terminal for tests: tmux runs a command in a pane, and its screen is read back as the user would see it
(cursor moves and line clearing applied, wrapped lines joined).

Each terminal has a tmux server of its own, on a socket of its own, killed when the test ends. Without
tmux, a test skips with the reason, except under ``CI=true``, where it fails (``.ci/run`` installs tmux).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import processes
import pytest

WIDTH, HEIGHT = 160, 60


class Terminal:
    """A tmux server on the socket ``socket``; each command runs in a session of its own."""

    def __init__(self, socket: Path, environment: dict[str, str]) -> None:
        self.socket = socket
        self.environment = environment
        self.sessions = 0

    def tmux(self, *arguments: str, timeout: float = 30) -> str:
        """Run one tmux command on this terminal's server; return its output."""
        done = processes.run(
            ["tmux", "-S", str(self.socket), *arguments], env=self.environment, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"tmux {arguments}: {done.stderr}"
        return str(done.stdout)

    def run(self, command: str, cwd: Path, timeout: float = 120) -> list[str]:
        """Run the shell command ``command`` in a new session and return the lines of its screen (its history
        included) once it has ended."""
        self.sessions += 1
        session, ended = f"run{self.sessions}", f"ended{self.sessions}"
        tmux = f"tmux -S {shlex.quote(str(self.socket))}"
        script = f"cd {shlex.quote(str(cwd))} && {command}; {tmux} wait-for -S {ended}; sleep 600"
        self.tmux("new-session", "-d", "-s", session, "-x", str(WIDTH), "-y", str(HEIGHT), script)
        self.tmux("wait-for", ended, timeout=timeout)
        screen = self.tmux("capture-pane", "-p", "-J", "-t", session, "-S", "-", "-E", "-")
        return [line.rstrip() for line in screen.rstrip("\n").splitlines() if line.strip()]

    def start(self, command: str, cwd: Path) -> Session:
        """Start the shell command ``command`` in a new session and return at once; the session records the
        command's exit status and the terminal's settings (``stty -g``) before and after it."""
        self.sessions += 1
        session = Session(self, f"live{self.sessions}", self.socket.parent / f"live{self.sessions}")
        session.files.mkdir()
        files = shlex.quote(str(session.files))
        tmux = f"tmux -S {shlex.quote(str(self.socket))}"
        script = (
            f"cd {shlex.quote(str(cwd))} && stty -g > {files}/before; {command}; echo $? > {files}/status; "
            f"stty -g > {files}/after; {tmux} wait-for -S {session.name}-ended; sleep 600"
        )
        self.tmux("new-session", "-d", "-s", session.name, "-x", str(WIDTH), "-y", str(HEIGHT), script)
        return session


class Session:
    """A command running in a tmux session of a :class:`Terminal`, which a test looks at and types into."""

    def __init__(self, terminal: Terminal, name: str, files: Path) -> None:
        self.terminal = terminal
        self.name = name
        self.files = files

    def screen(self) -> list[str]:
        """The lines the pane shows now (the visible screen only, as a full-screen program draws it)."""
        return self.terminal.tmux("capture-pane", "-p", "-t", self.name).rstrip("\n").splitlines()

    def wait_for_screen(self, shows: Callable[[list[str]], bool], timeout: float = 60) -> list[str]:
        """Capture the pane every 0.2 s until ``shows`` accepts what it shows; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if shows(lines):
                return lines
            assert time.monotonic() < deadline, "the screen never showed what was expected:\n" + "\n".join(lines)
            time.sleep(0.2)

    def send_keys(self, *keys: str) -> None:
        """Type ``keys`` (tmux key names, such as ``q`` or ``C-c``) into the pane."""
        self.terminal.tmux("send-keys", "-t", self.name, *keys)

    def pid(self, holding: str) -> int:
        """The process id of the pane shell's child whose command line holds ``holding``."""
        shell = self.terminal.tmux("display-message", "-p", "-t", self.name, "#{pane_pid}").strip()
        deadline = time.monotonic() + 30
        while True:
            for child in Path(f"/proc/{shell}/task/{shell}/children").read_text().split():
                with contextlib.suppress(FileNotFoundError):
                    if holding.encode() in Path(f"/proc/{child}/cmdline").read_bytes():
                        return int(child)
            assert time.monotonic() < deadline, f"no process running {holding!r} started"
            time.sleep(0.05)

    def wait_ended(self, timeout: float = 30) -> int:
        """Wait for the command to end; return its exit status."""
        self.terminal.tmux("wait-for", f"{self.name}-ended", timeout=timeout)
        return int((self.files / "status").read_text())

    def terminal_settings_restored(self) -> bool:
        """Whether the terminal's settings after the command are those before it (``stty -g``)."""
        return (self.files / "before").read_text() == (self.files / "after").read_text()


@contextmanager
def terminal() -> Iterator[Terminal]:
    """A terminal whose server lives while the block runs; skip (fail under ``CI=true``) without tmux."""
    if shutil.which("tmux") is None:
        message = "tmux is not installed (apt-get install tmux): the terminal output cannot be looked at"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    environment = {key: value for key, value in os.environ.items() if key not in ("SMALLAB_DB", "TMUX")}
    folder = Path(tempfile.mkdtemp(prefix="smallab-tmux-"))  # a socket's path holds at most 107 bytes
    opened = Terminal(folder / "socket", environment)
    try:
        yield opened
    finally:
        processes.run(["tmux", "-S", str(opened.socket), "kill-server"], env=environment, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
