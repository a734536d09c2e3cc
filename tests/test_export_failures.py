"""Exports that fail part-way, in both layouts: something in the way, a read-only target, a full disk. Each is one
``Error:`` line naming the path and the fix, the database is untouched and no temporary file is left; an export
killed part-way leaves temporary files, which the next export removes."""

from __future__ import annotations

import os
import resource
import signal
import sys
from pathlib import Path

import processes
import pytest
import unprivileged
from cli_checks import assert_clean_error
from click.testing import CliRunner

from smallab_db import ExperimentRunner, specification_hash
from smallab_db.cli import main

SCRIPT = Path(sys.executable).parent / "smallab-db"
LAYOUTS = ["seed", "smallab2"]
SEEDS = [{"seed": seed} for seed in range(3)]
FIRST = specification_hash(SEEDS[0])
BLOB = 300_000  # characters in each result: every run's file is larger than FILE_SIZE_LIMIT
FILE_SIZE_LIMIT = 200_000  # bytes; above SQLite's 32 KiB shared-memory file, which reading the database needs


def build(database: Path) -> None:
    """Batch ``done``: three completed runs with JSON results of about 300 KB, made and closed before the CLI runs."""
    with ExperimentRunner(database) as runner:
        runner.run("done", SEEDS, lambda spec: {"seed": spec["seed"], "blob": "x" * BLOB}, show_progress=False)


def files_below(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for folders)."""
    return {
        path.relative_to(folder).as_posix(): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def temporary_files(folder: Path) -> list[Path]:
    """The temporary files an export left below ``folder``."""
    return sorted(path for path in folder.rglob("*") if path.name.endswith(".tmp"))


def fresh_export(database: Path, layout: str, folder: Path) -> dict[str, bytes | None]:
    """The tree a complete export into a new folder gives."""
    with ExperimentRunner(database) as runner:
        runner.export("done", folder, layout)
    return files_below(folder / "done")


BLOCKERS = {  # layout: {case: (path below the batch folder, what stands there)}
    "seed": {
        "run-folder-is-a-file": (FIRST, "file"),
        "run-file-is-a-folder": (f"{FIRST}/{FIRST}.pkl", "folder"),
        "completed-json-is-a-folder": ("completed.json", "folder"),
    },
    "smallab2": {
        "experiments-is-a-file": ("experiments", "file"),
        "run-folder-is-a-file": (f"experiments/{FIRST}", "file"),
        "run-file-is-a-folder": (f"experiments/{FIRST}/run.json", "folder"),
        "failed-json-is-a-folder": ("failed.json", "folder"),
    },
}


@pytest.mark.parametrize(("layout", "case"), [(layout, case) for layout, cases in BLOCKERS.items() for case in cases])
def test_something_in_the_way_is_one_error_line_naming_it_and_the_fix(tmp_path: Path, layout: str, case: str) -> None:
    """A file where a folder goes, or a folder where a file goes: status 1, one line naming that path and how to
    fix it, the blocker untouched, no temporary file left, the database unchanged."""
    database = tmp_path / "runs.db"
    build(database)
    before = database.read_bytes()
    relative, kind = BLOCKERS[layout][case]
    blocker = tmp_path / "out" / "done" / relative
    blocker.parent.mkdir(parents=True)
    if kind == "file":
        blocker.write_text("mine")
    else:
        blocker.mkdir()

    result = CliRunner().invoke(
        main, ["export", str(database), "--batch", "done", "--to", str(tmp_path / "out"), "--layout", layout]
    )

    line = assert_clean_error(result)
    assert line.startswith(f"Error: cannot export batch 'done' to '{tmp_path / 'out' / 'done'}': "), line
    assert repr(str(blocker)) in line
    assert f"a {'file' if kind == 'file' else 'folder'} stands where" in line or "something stands where" in line
    assert "move it away, or choose another path; then export again" in line
    assert (blocker.read_text() == "mine") if kind == "file" else blocker.is_dir()
    assert temporary_files(tmp_path / "out") == []
    assert database.read_bytes() == before


def preexec_file_size_limit() -> None:
    """In the child: fail every write beyond FILE_SIZE_LIMIT bytes with EFBIG, as a full disk fails it with ENOSPC
    (Python ignores SIGXFSZ, so the write fails instead of killing the process)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_full_disk_is_one_error_line_and_the_next_export_completes_the_tree(tmp_path: Path, layout: str) -> None:
    """The installed script, under a file-size limit every run's file exceeds: status 1, one line naming the file
    and the fix, no temporary file left, the database unchanged; exporting again without the limit gives the tree
    a fresh export gives."""
    database = tmp_path / "runs.db"
    build(database)
    before = database.read_bytes()
    environment = {key: value for key, value in os.environ.items() if key != "SMALLAB_DB_DEBUG"}
    command = [str(SCRIPT), "export", str(database), "--batch", "done", "--to", str(tmp_path / "out")]

    process = processes.run(
        [*command, "--layout", layout], env=environment, text=True, timeout=120, preexec_fn=preexec_file_size_limit
    )

    assert (process.returncode, process.stdout) == (1, ""), process.stderr
    assert process.stderr.startswith("Error: cannot export batch 'done'") and process.stderr.count("\n") == 1
    assert "File too large" in process.stderr and "free some disk space" in process.stderr
    assert temporary_files(tmp_path / "out") == []
    assert database.read_bytes() == before
    with ExperimentRunner(database) as runner:
        runner.export("done", tmp_path / "out", layout)
    assert files_below(tmp_path / "out" / "done") == fresh_export(database, layout, tmp_path / "fresh")


def read_only_below(folder: Path) -> None:
    """Take the write bits off ``folder`` and everything below it."""
    for path in [*folder.rglob("*"), folder]:
        path.chmod(path.stat().st_mode & ~0o222)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("earlier", [False, True], ids=["new-tree", "earlier-tree"])
def test_a_read_only_target_is_one_error_line_naming_the_fix(tmp_path: Path, layout: str, earlier: bool) -> None:
    """Exporting, bound by file permissions as an ordinary user is (see tests/unprivileged.py), into a read-only
    folder, new (the batch folder cannot be made) or holding an earlier export (no temporary file can be made):
    status 1, one line naming the folder and the fix; nothing changes below the target and the database is
    unchanged."""
    unprivileged.require()
    database = tmp_path / "runs.db"
    build(database)
    target = tmp_path / "target"
    target.mkdir()
    if earlier:
        with ExperimentRunner(database) as runner:
            runner.run("done", [{"seed": 9}], lambda spec: {"seed": spec["seed"]}, show_progress=False)
        fresh_export(database, layout, target)
        with ExperimentRunner(database) as runner:
            runner.run("done", [{"seed": 10}], lambda spec: {"seed": spec["seed"]}, show_progress=False)
    read_only_below(target)
    before, tree = database.read_bytes(), files_below(target)

    process = unprivileged.run(
        [str(SCRIPT), "export", str(database), "--batch", "done", "--to", str(target), "--layout", layout],
        cwd=tmp_path,
    )

    assert (process.returncode, process.stdout) == (1, ""), process.stderr
    assert process.stderr.count("\n") == 1 and "Traceback" not in process.stderr
    assert f"Permission denied: '{target / 'done'}" in process.stderr
    assert "change its permissions, or choose another path" in process.stderr
    assert files_below(target) == tree
    assert database.read_bytes() == before


KILLED_EXPORT = """
import os, signal, sys
from smallab_db import ExperimentRunner

database, folder, layout, kill_at = sys.argv[1:]
renames = 0
rename = os.replace

def rename_or_die(source, destination):
    global renames
    renames += 1
    if renames == int(kill_at):  # killed with the temporary file written but not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    rename(source, destination)

os.replace = rename_or_die
ExperimentRunner(database).export("done", folder, layout)
"""
# Files an export into an empty folder renames into place: per run 2 (seed) or 1 (smallab2), and the listings.
RENAMES = {"seed": 2 * len(SEEDS) + 1, "smallab2": len(SEEDS) + 2}


@pytest.mark.parametrize(
    ("layout", "kill_at"), [(layout, kill_at) for layout in LAYOUTS for kill_at in range(1, RENAMES[layout] + 1)]
)
def test_the_next_export_removes_what_a_killed_export_left(tmp_path: Path, layout: str, kill_at: int) -> None:
    """An export SIGKILLed before its ``kill_at``-th rename leaves temporary files (in the batch folder, in run
    folders); the next export removes every one of them and gives the tree a fresh export gives."""
    database = tmp_path / "runs.db"
    build(database)

    killed = processes.run(
        [sys.executable, "-c", KILLED_EXPORT, str(database), str(tmp_path / "out"), layout, str(kill_at)], timeout=120
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert temporary_files(tmp_path / "out"), "the killed export left no temporary file"
    with ExperimentRunner(database) as runner:
        runner.export("done", tmp_path / "out", layout)
    assert temporary_files(tmp_path / "out") == []
    assert files_below(tmp_path / "out" / "done") == fresh_export(database, layout, tmp_path / "fresh")
