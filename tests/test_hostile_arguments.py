"""Every command of the installed ``smallab-db`` script, given hostile arguments, fails cleanly: status 1 or 2, one
``Error:`` line, no traceback, no internal error, and the database file byte-for-byte unchanged.

The commands are discovered from the click group, so a new command fails :func:`test_every_command_has_a_catalogue`
until it gets its entry in ``SLOTS``. Each command line is run through the real console script in a subprocess, as
bytes (undecodable bytes and UTF-8-encoded surrogates reach Python as lone surrogates), with ``$SMALLAB_DB_DEBUG``
unset, as a user runs it, and with a strict UTF-8 standard output, as on a terminal whose locale is not ``C.UTF-8``.
A NUL character cannot be passed on a command line, so those cases run in-process with click's ``CliRunner``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import processes
import pytest
from click.testing import CliRunner
from workloads import FailOnOdd, Square

from smallab_db import ExperimentRunner, specification_hash
from smallab_db.cli import main

SCRIPT = Path(sys.executable).parent / "smallab-db"

# Hostile values for names: batch names, hash prefixes, SQL.
NAMES: dict[str, str | bytes] = {
    "undecodable": b"caf\xe9",
    "encoded-surrogate": b"x\xed\xa0\x80",  # U+D800 encoded as UTF-8, which UTF-8 forbids
    "long": "x" * 10_000,
    "dot-dot": "../../etc",
    "dash": "-",
    "double-dash": "--",
    "empty": "",
    "whitespace": " \t ",
    "newline": "a\nb",
    "sql": "x'; DROP TABLE runs; --",
    "unknown-option": "--no-such-option",
    "huge-number": "9" * 40,
    "negative": "-1",
}
# Hostile values for paths; ``{notes}`` is a regular file, so a path below it can never be created.
PATHS = {key: NAMES[key] for key in ("undecodable", "encoded-surrogate", "long", "dot-dot", "dash", "empty")}
# URLs that name no database, and could not create one: ``migrate`` and ``import`` create a database at a new path
# (a file name that is not UTF-8 is a valid one: those go below ``{notes}``, where nothing can be created).
NO_DATABASE: dict[str, str | bytes] = {
    "long": NAMES["long"],
    "directory": "{folder}",
    "not-a-database": "{notes}",
    "missing-directory": "{folder}/missing/runs.db",
    "postgres-scheme": "postgres://postgres@127.0.0.1:5432/postgres",
    "postgresql-closed-port": "postgresql://postgres@127.0.0.1:1/none",
    "postgresql-missing-database": "postgresql://postgres@127.0.0.1:5432/smallab_no_such_database",
    "sqlite-in-memory": "sqlite://",
}
URLS = {**PATHS, **NO_DATABASE}
CHOICES = {key: NAMES[key] for key in ("undecodable", "long", "empty")}
BAD_BATCH_NAMES = {key: NAMES[key] for key in ("undecodable", "encoded-surrogate", "long", "empty", "whitespace")}
SCHEDULERS: dict[str, str | bytes] = {
    **{key: NAMES[key] for key in ("undecodable", "long", "empty", "whitespace", "sql", "dash")},
    "closed-port": "tcp://127.0.0.1:1",
}
# ``run`` with everything valid but the one slot: an experiment the tests' folder holds (on PYTHONPATH, see
# user_environment) and a file of specifications.
RUN = ["run", "{db}", "--batch", "fresh", "--experiment", "workloads:Square", "--specs", "{specs}"]


def run_with(option: str, value: str) -> list[str]:
    """The valid ``run`` command line with ``option`` given ``value`` (replacing it where RUN has it)."""
    line = list(RUN)
    if option in line:
        line[line.index(option) + 1] = value
    else:
        line += [option, value]
    return line


# Per command, where a hostile value goes ("{V}") and which values go there. ``{db}`` is the database, ``{tree}`` a
# batch exported from it, ``{hash}`` the hash of one of its runs, ``{out}`` a folder an export may create.
SLOTS: dict[str, list[tuple[str, list[str], dict[str, str | bytes]]]] = {
    "migrate": [("url", ["migrate", "{notes}/{V}"], PATHS), ("url", ["migrate", "{V}"], NO_DATABASE)],
    "status": [("url", ["status", "{V}"], URLS), ("url-json", ["status", "{V}", "--json"], NO_DATABASE)],
    "query": [
        ("sql", ["query", "{db}", "{V}"], NAMES),
        ("url", ["query", "{V}", "SELECT count(*) FROM runs"], URLS),
    ],
    "runs": [
        ("batch", ["runs", "{db}", "--batch", "{V}"], NAMES),
        ("status", ["runs", "{db}", "--batch", "done", "--status", "{V}"], CHOICES),
        ("url", ["runs", "{V}", "--batch", "done"], URLS),
        ("batch-json", ["runs", "{db}", "--batch", "{V}", "--json"], NAMES),
        ("batch-full", ["runs", "{db}", "--batch", "{V}", "--full"], NAMES),
    ],
    "show": [
        ("prefix", ["show", "{db}", "{V}"], NAMES),
        ("batch", ["show", "{db}", "{hash}", "--batch", "{V}"], NAMES),
        ("url", ["show", "{V}", "{hash}"], URLS),
        ("prefix-json", ["show", "{db}", "{V}", "--json"], NAMES),
    ],
    "logs": [
        ("prefix", ["logs", "{db}", "{V}"], NAMES),
        ("batch", ["logs", "{db}", "{hash}", "--batch", "{V}"], NAMES),
        ("url", ["logs", "{V}", "{hash}"], URLS),
        ("prefix-follow", ["logs", "{db}", "{V}", "--follow"], NAMES),
    ],
    "export": [
        ("batch", ["export", "{db}", "--batch", "{V}", "--to", "{out}"], NAMES),
        ("to", ["export", "{db}", "--batch", "done", "--to", "{notes}/{V}"], PATHS),
        ("layout", ["export", "{db}", "--batch", "done", "--to", "{out}", "--layout", "{V}"], CHOICES),
        ("url", ["export", "{V}", "--batch", "done", "--to", "{out}"], URLS),
    ],
    "import": [
        ("folder", ["import", "{V}", "--batch", "fresh", "{db}"], PATHS),
        ("batch", ["import", "{folder}", "--batch", "{V}", "{db}"], NAMES),
        ("url", ["import", "{tree}", "--batch", "fresh", "{notes}/{V}"], PATHS),
        ("url", ["import", "{tree}", "--batch", "fresh", "{V}"], NO_DATABASE),
    ],
    "retry": [
        ("batch", ["retry", "{db}", "--batch", "{V}"], NAMES),
        ("url", ["retry", "{V}", "--batch", "broken"], URLS),
        ("run", ["retry", "{db}", "--batch", "broken", "--run", "{V}"], NAMES),
        ("status", ["retry", "{db}", "--batch", "broken", "--status", "{V}"], CHOICES),
    ],
    "rm": [
        ("batch", ["rm", "{db}", "--batch", "{V}", "--yes"], NAMES),
        ("url", ["rm", "{V}", "--batch", "broken"], URLS),
        ("run", ["rm", "{db}", "--batch", "broken", "--run", "{V}", "--yes"], NAMES),
        ("status", ["rm", "{db}", "--batch", "broken", "--status", "{V}", "--yes"], CHOICES),
    ],
    "run": [
        ("batch", run_with("--batch", "{V}"), BAD_BATCH_NAMES),
        ("experiment", run_with("--experiment", "{V}"), NAMES),
        ("specs", run_with("--specs", "{notes}/{V}"), PATHS),
        ("grid", [*RUN[:-2], "--grid", "{notes}/{V}"], PATHS),
        ("parallel", run_with("--parallel", "{V}"), NAMES),
        ("backend", run_with("--backend", "{V}"), NAMES),
        ("lease", run_with("--lease", "{V}"), NAMES),
        ("scheduler", run_with("--scheduler", "{V}"), SCHEDULERS),
        ("url", ["run", "{notes}/{V}", *RUN[2:]], PATHS),
        ("url", ["run", "{V}", *RUN[2:]], NO_DATABASE),
    ],
    "watch": [
        ("url", ["watch", "{V}", "--once"], URLS),
        ("batch", ["watch", "{db}", "--batch", "{V}", "--once"], NAMES),
        ("batch-live", ["watch", "{db}", "--batch", "{V}"], NAMES),  # no terminal here: refused, never hangs
        ("live", ["watch", "{db}", "{V}"], {"extra-argument": "done"}),
    ],
    "report": [
        ("batch", ["report", "{db}", "--batch", "{V}", "-o", "{folder}/report.html"], NAMES),
        ("output", ["report", "{db}", "--batch", "done", "-o", "{notes}/{V}"], PATHS),
        ("output", ["report", "{db}", "--batch", "done", "-o", "{V}"], {"directory": "{folder}", "slash": "x/"}),
        ("url", ["report", "{V}", "--batch", "done", "-o", "{folder}/report.html"], URLS),
    ],
}


@dataclass(frozen=True)
class Setting:
    """The files the command lines refer to, below ``root``, and the working directory they run in, two levels
    below ``root`` so that ``../../etc`` stays inside it."""

    places: dict[str, Path | str]
    database: Path
    root: Path
    cwd: Path

    def fill(self, template: list[str], value: str | bytes) -> list[bytes]:
        """The command line of ``template`` with ``value`` for ``{V}`` and the places for theirs, as bytes."""
        hostile = value if isinstance(value, bytes) else os.fsencode(value)
        for name, place in self.places.items():
            hostile = hostile.replace(f"{{{name}}}".encode(), os.fsencode(str(place)))
        line = []
        for part in template:
            encoded = part.encode()
            for name, place in self.places.items():
                encoded = encoded.replace(f"{{{name}}}".encode(), os.fsencode(str(place)))
            line.append(encoded.replace(b"{V}", hostile))
        return line


def sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setting]:
    """A database with a completed batch (``done``) and one with failures (``broken``), made with the Python API and
    closed; a tree exported from it; a regular file; an empty folder; an empty working directory."""
    root = tmp_path_factory.mktemp("hostile")
    database = root / "runs.db"
    with ExperimentRunner(database) as runner:
        runner.on_specification_failure(None)
        runner.run("done", [{"seed": seed} for seed in range(3)], Square(), show_progress=False)
        runner.run("broken", [{"seed": seed} for seed in range(4)], FailOnOdd(), show_progress=False)
        tree = runner.export("done", root / "tree")
    notes = root / "notes.txt"
    notes.write_text("my notes, not a database\n")
    specs = root / "specs.json"
    specs.write_text('[{"seed": 1}, {"seed": 2}]')
    (root / "folder").mkdir()
    cwd = root / "work" / "cwd"
    cwd.mkdir(parents=True)
    places: dict[str, Path | str] = {
        "db": database,
        "tree": tree,
        "hash": specification_hash({"seed": 1})[:12],
        "notes": notes,
        "folder": root / "folder",
        "out": root / "out",
        "specs": specs,
    }
    yield Setting(places, database, root, cwd)


def user_environment() -> dict[str, str]:
    """The environment of a user's shell: no ``$SMALLAB_DB`` or debugging, and a standard output that refuses
    anything that is not UTF-8 (as on a terminal with a UTF-8 locale other than ``C.UTF-8``). The tests' folder is
    on ``PYTHONPATH`` (``run`` imports an experiment from it), and Dask gives up connecting after 3 s, not 30."""
    environment = {key: value for key, value in os.environ.items() if key not in ("SMALLAB_DB", "SMALLAB_DB_DEBUG")}
    environment["PYTHONIOENCODING"] = "utf-8:strict"
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parent)
    environment["DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"] = "3s"
    return environment


def problems_with(returncode: int, stdout: str, stderr: str) -> list[str]:
    """What is wrong with how a command failed: anything but status 1 with one ``Error:`` line, or status 2 with
    click's usage message ending in an ``Error:`` line, on standard error only."""
    problems = []
    if returncode not in (1, 2):
        problems.append(f"exit status {returncode}")
    if "Traceback" in stdout + stderr:
        problems.append("a traceback")
    if "internal error" in stderr:
        problems.append("an internal error")
    lines = stderr.splitlines()
    if returncode == 1 and (len(lines) != 1 or not lines[0].startswith("Error: ")):
        problems.append("not exactly one 'Error:' line")
    if returncode == 2 and (not lines or not lines[-1].startswith("Error: ")):
        problems.append("no 'Error:' line after the usage")
    if stdout:
        problems.append("output on stdout")
    return problems


def written(setting: Setting, before: set[Path]) -> list[Path]:
    """The paths that appeared below the setting's root since ``before``; they are removed, for the next case."""
    new = sorted(set(setting.root.rglob("*")) - before)
    for path in reversed(new):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    return new


def test_every_command_has_a_catalogue() -> None:
    """Each command of the group has hostile cases, and the catalogue names no command that does not exist."""
    assert set(SLOTS) == set(main.commands), f"give every command of smallab_db.cli.main an entry in SLOTS: {SLOTS}"


@pytest.mark.parametrize("command", sorted(main.commands))
def test_hostile_arguments_fail_cleanly_and_change_nothing(setting: Setting, command: str) -> None:
    """Every hostile case of ``command``, run through the installed script, fails cleanly and leaves the database
    file's bytes as they were (the failures of all cases are listed together)."""
    assert command in SLOTS, f"command {command!r} has no hostile cases: add it to SLOTS"
    before = sha256(setting.database)
    paths = set(setting.root.rglob("*"))
    failures: list[str] = []
    for slot, template, values in SLOTS[command]:
        for name, value in values.items():
            line = setting.fill(template, value)
            process = processes.run([str(SCRIPT), *line], cwd=setting.cwd, env=user_environment(), timeout=120)
            stdout = process.stdout.decode("utf-8", "backslashreplace")
            stderr = process.stderr.decode("utf-8", "backslashreplace")
            problems = problems_with(process.returncode, stdout, stderr)
            if sha256(setting.database) != before:
                problems.append("the database changed")
            if new := written(setting, paths):
                problems.append(f"it wrote {new!r:.300}")
            if problems:
                failures.append(f"{slot}={name}: {', '.join(problems)}\n  {line!r:.300}\n  {stderr[-600:]}")
    assert not failures, f"{len(failures)} case(s) of {command!r} failed:\n" + "\n".join(failures)


NUL_VALUES = {"nul": "a\x00b", "only-nul": "\x00"}


@pytest.mark.parametrize("command", sorted(main.commands))
def test_nul_characters_fail_cleanly_and_change_nothing(setting: Setting, command: str) -> None:
    """A NUL character, which a command line cannot carry but a caller of ``main`` can, in every slot of
    ``command``: a clean failure, no unexpected exception, and the database unchanged."""
    before = sha256(setting.database)
    paths = set(setting.root.rglob("*"))
    failures = []
    for slot, template, _ in SLOTS[command]:
        for name, value in NUL_VALUES.items():
            line = [os.fsdecode(part) for part in setting.fill(template, value)]
            result = CliRunner().invoke(main, line, env={"SMALLAB_DB": None})
            problems = [] if isinstance(result.exception, SystemExit) else [f"raised {result.exception!r}"]
            problems += problems_with(result.exit_code, result.stdout, result.stderr)
            if sha256(setting.database) != before:
                problems.append("the database changed")
            if new := written(setting, paths):
                problems.append(f"it wrote {new!r:.300}")
            if problems:
                failures.append(f"{slot}={name}: {', '.join(problems)}\n  {line!r:.300}\n  {result.stderr[-600:]}")
    assert not failures, f"{len(failures)} case(s) of {command!r} failed:\n" + "\n".join(failures)


def test_the_valid_run_line_runs(setting: Setting, tmp_path: Path) -> None:
    """The ``run`` line the hostile cases start from succeeds as it is, so each case fails for its one bad value."""
    line = setting.fill([RUN[0], str(tmp_path / "fresh.db"), *RUN[2:]], "")
    process = processes.run([str(SCRIPT), *line], cwd=setting.cwd, env=user_environment(), timeout=120)
    assert process.returncode == 0, process.stderr
    assert b"batch 'fresh': 2 completed, 0 failed, 0 already completed" in process.stdout
