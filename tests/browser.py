"""Opening a page in headless Chromium, as a reader would: the DOM once its scripts have run, what they wrote to
the console, and a screenshot. Without Chromium, a test skips with the reason, except under ``CI=true``, where it
fails (``.ci/run`` installs Debian's ``chromium`` package)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import processes
import pytest

SCRIPT_TIME_MS = 20_000  # virtual time the page's scripts get before the DOM is read (it passes faster when idle)
CONSOLE = re.compile(r":CONSOLE[:(]")  # how Chromium's log (--enable-logging=stderr) marks a console message


@dataclass(frozen=True)
class Rendered:
    """A page as Chromium showed it."""

    dom: str
    console: list[str]
    screenshot: Path


def chromium() -> str:
    """The Chromium executable; skip (fail under ``CI=true``) when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Chromium is not installed (apt-get install chromium): the report cannot be looked at"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def render(page: Path, folder: Path, width: int = 1400, height: int = 3000) -> Rendered:
    """Open ``page`` in headless Chromium twice, offline, with a fresh profile below ``folder``: once to dump the DOM
    after its scripts ran, once for a screenshot (``folder/screenshot.png``); collect the console messages of both."""
    executable = chromium()
    screenshot = folder / "screenshot.png"
    common = [
        executable,
        "--headless",
        "--no-sandbox",  # the tests may run as root, which Chromium's sandbox refuses
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--proxy-server=127.0.0.1:9",  # offline: every request, to a CDN say, fails (port 9 discards)
        "--proxy-bypass-list=<-loopback>",
        f"--user-data-dir={folder / 'chromium-profile'}",
        f"--virtual-time-budget={SCRIPT_TIME_MS}",
        f"--window-size={width},{height}",
    ]
    url = page.resolve().as_uri()
    dumped = processes.run([*common, "--dump-dom", url], text=True, timeout=120)
    shot = processes.run([*common, f"--screenshot={screenshot}", url], text=True, timeout=120)
    assert dumped.returncode == 0 and shot.returncode == 0, dumped.stderr + shot.stderr
    console = [line for line in (dumped.stderr + shot.stderr).splitlines() if CONSOLE.search(line)]
    return Rendered(dumped.stdout, console, screenshot)
