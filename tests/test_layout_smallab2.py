"""The smallab2 layout against the real smallab 2.3.1: its runner skips what we export, and we read what it writes.

smallab 2.3.1 always works below ``./experiment_runs``, so each of its subprocesses runs in ``tmp_path``. They
import this module (tests/ on ``PYTHONPATH``) and call :func:`smallab_231`, so results hold the same classes on
both sides of a pickle.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import processes
from smallab.experiment_types.experiment import Experiment as SmallabExperiment
from smallab.runner.runner import ExperimentRunner as SmallabRunner
from smallab.runner_implementations.main_process_runner import MainRunner
from smallab.utilities.experiment_loading.experiment_loader import experiment_iterator

from smallab_db import specification_hash
from smallab_db.layouts import seed, smallab2
from smallab_db.layouts.records import FoundRun, StoredRun, Unreadable

TESTS = Path(__file__).resolve().parent
BATCH = "awkward batch"
AWKWARD = [
    {"path": "../../etc/passwd"},
    {"name": 'a/b\\c:d*e?f"g<h>i|j'},
    {"..": "..", ".": "/"},
    {"unicode": "naïve ☃ 🐍 日本語", "ünï/cødé": "x"},
    {"long": "x" * 5000},
    {"controls": "\x01\n\t\r", "empty": ""},
    {"nested": {"a/b": [1, 2.5, None, True, {"c:d": "e*f?"}]}},
    {"CON": "NUL", "aux.txt": "COM1"},  # names Windows reserves
]
KINDS = ["json", "set", "tuple", "object"]  # kinds of result: JSON, then three that JSON cannot hold
OLD_NS = 1_000_000_000 * 10**9
# A smallab 2.3.1 script's result holding a class the script defines: dill pickles it by value, pickle cannot load it.
DILL_SCRIPT = """
import sys, dill
class Point:
    def __init__(self, x):
        self.x = x
sys.stdout.buffer.write(dill.dumps({"specification": {"seed": 1}, "result": {"point": Point(3)}}))
"""


@dataclass(frozen=True)
class Measurement:
    """A result value of a custom class."""

    value: float
    unit: str


class Recording(SmallabExperiment):
    """A smallab 2.3.1 experiment that leaves a marker file per execution and fails specifications marked so."""

    def __init__(self, markers: str) -> None:
        self.markers = markers

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        Path(self.markers, f"{specification_hash(specification)}.{uuid.uuid4().hex}").touch()
        if specification.get("fails"):
            raise RuntimeError("fails on purpose")
        return result_of(specification)

    def get_name(self, specification: dict[str, Any]) -> str:
        return f"run-{specification_hash(specification)[:16]}"


def smallab_231(arguments: list[str]) -> None:
    """Subprocess entry: ``run BATCH SPECIFICATIONS_JSON MARKERS`` or ``read BATCH OUTPUT_PICKLE``."""
    if arguments[0] == "run":
        batch, specifications, markers = arguments[1:]
        SmallabRunner().run(
            batch,
            json.loads(Path(specifications).read_text("utf-8")),
            Recording(markers),
            specification_runner=MainRunner(show_progress=False),
            use_dashboard=False,
        )
    else:
        batch, output = arguments[1:]
        Path(output).write_bytes(pickle.dumps(list(experiment_iterator(batch))))


def run_smallab_231(tmp_path: Path, *arguments: str) -> None:
    """Run :func:`smallab_231` in a subprocess in ``tmp_path``; smallab 2.3.1 logs and swallows fatal errors."""
    python_path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    process = processes.run(
        [sys.executable, "-c", "import sys, test_layout_smallab2; test_layout_smallab2.smallab_231(sys.argv[1:])"]
        + list(arguments),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": python_path},
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    assert "Fatal Error" not in process.stderr, process.stderr


def make_specifications(first_seed: int) -> list[dict[str, Any]]:
    """One specification per awkward dict, with every kind of result in turn."""
    return [
        {**awkward, "kind": KINDS[index % len(KINDS)], "seed": first_seed + index}
        for index, awkward in enumerate(AWKWARD)
    ]


def result_of(specification: dict[str, Any]) -> dict[str, Any]:
    """The result of a specification, of its kind."""
    seed_value = specification["seed"]
    return {
        "json": {"seed": seed_value, "half": seed_value / 2, "nested": {"../x": [None, "ü:*?"]}},
        "set": {"tags": {"a/b", "..", seed_value}},
        "tuple": {"pair": (seed_value, "x")},
        "object": {"measurement": Measurement(seed_value / 3, "m/s")},
    }[specification["kind"]]


def as_json(value: Any) -> Any:
    """``value`` after a JSON round trip."""
    return json.loads(json.dumps(value))


def stored(specification: dict[str, Any], result: dict[str, Any] | None = None) -> StoredRun:
    """The StoredRun of a completed specification; its result is ``result_of(specification)`` unless given."""
    result = result_of(specification) if result is None else result
    try:
        result_is_json = as_json(result) == result
    except TypeError:
        result_is_json = False
    return StoredRun(specification_hash(specification), specification, result, result_is_json)


def as_smallab_231_stores(result: dict[str, Any]) -> Any:
    """What smallab 2.3.1 reads back of a result it stored: JSON when ``json.dump`` takes it (tuples become
    lists), else the pickled result itself."""
    try:
        return as_json(result)
    except TypeError:
        return result


def by_hash(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{specification hash: result}`` of records, checking that no specification appears twice."""
    results = {specification_hash(record["specification"]): record["result"] for record in records}
    assert len(results) == len(records), "a specification appears twice"
    return results


def found_runs(batch_folder: Path) -> list[dict[str, Any]]:
    """The records ``read_batch`` finds, asserting that every file was readable."""
    entries = list(smallab2.read_batch(batch_folder))
    assert all(isinstance(entry, FoundRun) for entry in entries), entries
    return [{"specification": entry.specification, "result": entry.result} for entry in entries]


def executions(markers: Path) -> dict[str, int]:
    """How many times smallab 2.3.1 executed each specification, by hash."""
    counts: dict[str, int] = {}
    for marker in markers.iterdir():
        spec_hash = marker.name.split(".")[0]
        counts[spec_hash] = counts.get(spec_hash, 0) + 1
    return counts


def file_mtimes(folder: Path) -> dict[Path, int]:
    """The modification time of every file below ``folder``."""
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_the_real_smallab_2_3_1_is_installed() -> None:
    assert version("smallab") == "2.3.1", "the tests need smallab 2.3.1 itself: pip install '.[test]'"


def test_export_writes_the_layout_and_reads_it_back(tmp_path: Path) -> None:
    completed = make_specifications(0)
    failed = [{"seed": 99, "path": "../failed"}]
    batch = tmp_path / "experiment_runs" / BATCH

    smallab2.export_batch(batch, [stored(specification) for specification in completed], failed)

    assert json.loads((batch / "completed.json").read_bytes()) == completed
    assert json.loads((batch / "failed.json").read_bytes()) == failed
    folders = {folder.name: folder for folder in (batch / "experiments").iterdir()}
    assert set(folders) == {specification_hash(specification) for specification in completed}
    for specification in completed:
        folder = folders[specification_hash(specification)]
        files = {path.name for path in folder.iterdir()}
        assert files == ({"run.json"} if specification["kind"] == "json" else {"run.pkl", "specification.json"})
        if specification["kind"] != "json":
            assert json.loads((folder / "specification.json").read_bytes()) == specification
    assert by_hash(found_runs(batch)) == {specification_hash(s): result_of(s) for s in completed}
    assert smallab2.looks_like(batch) and not seed.looks_like(batch)
    seed_batch = tmp_path / "seed"
    seed.export_batch(seed_batch, [stored(specification) for specification in completed], [])
    assert not smallab2.looks_like(seed_batch)


def test_smallab_231_skips_every_exported_run_and_reads_it_back(tmp_path: Path) -> None:
    exported = make_specifications(0)
    not_exported = make_specifications(100)
    failed = [{"seed": 200, "kind": "json", "path": "../../failed"}]
    markers = tmp_path / "markers"
    markers.mkdir()
    specifications = tmp_path / "specifications.json"
    specifications.write_text(json.dumps(not_exported[:4] + exported + failed + not_exported[4:]), "utf-8")
    smallab2.export_batch(
        tmp_path / "experiment_runs" / BATCH, [stored(specification) for specification in exported], failed
    )

    run_smallab_231(tmp_path, "run", BATCH, str(specifications), str(markers))
    output = tmp_path / "read.pickle"
    run_smallab_231(tmp_path, "read", BATCH, str(output))

    assert executions(markers) == {specification_hash(specification): 1 for specification in not_exported + failed}
    expected = {specification_hash(specification): result_of(specification) for specification in exported}
    expected |= {specification_hash(s): as_smallab_231_stores(result_of(s)) for s in not_exported + failed}
    assert by_hash(pickle.loads(output.read_bytes())) == expected


def test_read_batch_reads_a_tree_smallab_231_wrote(tmp_path: Path) -> None:
    completed = make_specifications(0)
    markers = tmp_path / "markers"
    markers.mkdir()
    specifications = tmp_path / "specifications.json"
    specifications.write_text(json.dumps(completed + [{"seed": 50, "kind": "json", "fails": True}]), "utf-8")
    run_smallab_231(tmp_path, "run", BATCH, str(specifications), str(markers))
    batch = tmp_path / "experiment_runs" / BATCH
    expected = {specification_hash(s): as_smallab_231_stores(result_of(s)) for s in completed}

    assert smallab2.looks_like(batch)
    assert by_hash(found_runs(batch)) == expected

    damaged = [sorted(batch.rglob("run.pkl"))[0], sorted(batch.rglob("run.json"))[0]]
    for path in damaged:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    entries = list(smallab2.read_batch(batch))
    assert {entry.path for entry in entries if isinstance(entry, Unreadable)} == set(damaged)
    found = [{"specification": e.specification, "result": e.result} for e in entries if isinstance(e, FoundRun)]
    damaged_folders = {path.parent.name for path in damaged}
    assert by_hash(found) == {h: result for h, result in expected.items() if f"run-{h[:16]}" not in damaged_folders}


def test_read_batch_reads_classes_of_a_script_that_dill_pickled_by_value(tmp_path: Path) -> None:
    pickled = processes.run([sys.executable, "-c", DILL_SCRIPT], check=True, timeout=60).stdout
    run_folder = tmp_path / "experiments" / "run"
    run_folder.mkdir(parents=True)
    (run_folder / "run.pkl").write_bytes(pickled)

    (run,) = smallab2.read_batch(tmp_path)

    assert isinstance(run, FoundRun) and run.specification == {"seed": 1} and run.result["point"].x == 3


def test_read_batch_reports_records_of_the_wrong_shape(tmp_path: Path) -> None:
    contents = {
        "list": b"[1, 2]",
        "no-result": b'{"specification": {}}',
        "list-result": b'{"specification": {}, "result": []}',
    }
    for name, content in contents.items():
        (tmp_path / "experiments" / name).mkdir(parents=True)
        (tmp_path / "experiments" / name / "run.json").write_bytes(content)

    entries = list(smallab2.read_batch(tmp_path))

    assert all(isinstance(entry, Unreadable) for entry in entries)
    assert {entry.path.parent.name for entry in entries} == set(contents)


def test_export_again_rewrites_only_what_changed(tmp_path: Path) -> None:
    specifications = make_specifications(0)
    runs = [stored(specification) for specification in specifications]
    batch = tmp_path / "experiment_runs" / BATCH
    smallab2.export_batch(batch, runs, [])
    for path in file_mtimes(batch):
        os.utime(path, ns=(OLD_NS, OLD_NS))

    smallab2.export_batch(batch, runs, [])

    assert set(file_mtimes(batch).values()) == {OLD_NS}

    experiments = batch / "experiments"
    changed, gone, switched = runs[0], runs[1], runs[4]  # a JSON result, a set, a JSON result
    leftover = experiments / runs[2].spec_hash / ".run.pkl.killed.tmp"
    leftover.write_bytes(b"\x80")
    foreign = experiments / "run-written-by-smallab" / "run.json"
    foreign.parent.mkdir()
    foreign.write_bytes(b'{"specification": {"seed": -1}, "result": {}}')
    before = file_mtimes(batch)
    runs[0] = stored(changed.specification, {"changed": True})
    runs[4] = stored(switched.specification, {"now": {"a set"}})
    del runs[1]

    smallab2.export_batch(batch, runs, [gone.specification])

    after = file_mtimes(batch)
    assert not (experiments / gone.spec_hash).exists() and not leftover.exists() and foreign.exists()
    assert {path.name for path in (experiments / switched.spec_hash).iterdir()} == {"run.pkl", "specification.json"}
    rewritten = {path.relative_to(batch).as_posix() for path in after if after[path] != before.get(path)}
    assert rewritten == {
        "completed.json",
        "failed.json",
        f"experiments/{changed.spec_hash}/run.json",
        f"experiments/{switched.spec_hash}/run.pkl",
        f"experiments/{switched.spec_hash}/specification.json",
    }
    assert json.loads((batch / "failed.json").read_bytes()) == [gone.specification]
    expected = {run.spec_hash: run.result for run in runs} | {specification_hash({"seed": -1}): {}}
    assert by_hash(found_runs(batch)) == expected


def test_the_cli_exports_and_imports_the_smallab2_layout(tmp_path: Path) -> None:
    """``smallab-db export --layout smallab2`` then ``smallab-db import`` gives the same runs back."""
    from click.testing import CliRunner

    from smallab_db import ExperimentRunner
    from smallab_db.cli import main

    database = str(tmp_path / "runs.db")
    runner = ExperimentRunner(database)
    runner.on_specification_failure(None)
    specifications = [{"seed": seed, "name": "a/b:c"} for seed in range(4)]
    runner.run(
        "cli", specifications, lambda spec: {"values": {spec["seed"]}, "seed": spec["seed"]}, show_progress=False
    )
    exported = CliRunner().invoke(
        main, ["export", database, "--batch", "cli", "--to", str(tmp_path / "out"), "--layout", "smallab2"]
    )
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "out" / "cli" / "experiments").is_dir()
    imported = CliRunner().invoke(main, ["import", str(tmp_path / "out" / "cli"), "--batch", "back", database])
    assert imported.exit_code == 0, imported.output
    assert "imported 4 run(s)" in imported.output and "smallab2 layout" in imported.output
    by_seed = lambda runs: sorted(runs, key=lambda run: run["specification"]["seed"])  # noqa: E731
    assert by_seed(runner.results("back")) == by_seed(runner.results("cli"))
