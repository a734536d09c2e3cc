"""Running a step as file permissions bind an ordinary user, wherever the virtual environment lives.

As root, the step keeps its user id but loses the capabilities that let root ignore file modes (``CAP_DAC_OVERRIDE``
and ``CAP_DAC_READ_SEARCH``, dropped from its bounding set by ``setpriv``): it still reaches the venv and the
checkout, root's own files even under ``/root`` or a ``mktemp -d`` folder of mode 700, while the kernel refuses it
what the modes refuse an owner: writing a file of mode 444, creating a file in a folder of mode 555. As any other
user, the step runs as it is. Where neither works, a test skips with the reason, except under ``CI=true``, where it
fails.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import processes
import pytest

WITHOUT_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@functools.cache
def _prefix_or_reason() -> tuple[list[str], str]:
    """The command prefix that makes a step bound by file modes, and why there is none (empty when there is)."""
    if os.getuid() != 0:
        return [], ""
    if shutil.which("setpriv") is None:
        return [], "runs as root, and setpriv (util-linux) is missing to drop root's right to ignore file modes"
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "read-only"
        probe.write_text("")
        probe.chmod(0o444)
        try:
            tried = processes.run([*WITHOUT_OVERRIDE, "sh", "-c", f"echo x >> '{probe}'"], timeout=60)
        except OSError as error:
            return [], f"setpriv cannot run: {error}"
        if tried.returncode == 0:
            return [], "setpriv could not drop root's right to ignore file modes (no CAP_SETPCAP here?)"
    return WITHOUT_OVERRIDE, ""


def require() -> None:
    """Skip the calling test when no step can be made bound by file modes here; under ``CI=true``, fail instead."""
    _, reason = _prefix_or_reason()
    if reason:
        message = f"cannot run a step bound by file permissions: {reason}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def run(arguments: Sequence[str], cwd: Path, **options: object) -> subprocess.CompletedProcess[str]:
    """Run ``arguments`` bound by file modes (see the module's docstring), with text output; call :func:`require`
    first."""
    prefix, reason = _prefix_or_reason()
    assert not reason, reason
    return processes.run([*prefix, *arguments], cwd=cwd, text=True, timeout=120, **options)
