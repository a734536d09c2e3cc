"""runner.export: smallab's folder tree of a batch's completed runs."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from workloads import FailOnOdd

from smallab_db import ExperimentRunner, ExportError, UsageError, specification_hash

BATCH = "exported"
SPECIFICATIONS = [{"seed": seed, "size": size} for seed in range(4) for size in (10, 20)]  # odd seeds fail
COMPLETED = [spec for spec in SPECIFICATIONS if spec["seed"] % 2 == 0]


@pytest.fixture
def runner(sqlite_path: str) -> Iterator[ExperimentRunner]:
    """A runner on a fresh SQLite file holding batch BATCH, run with FailOnOdd (half of the runs failed)."""
    with ExperimentRunner(sqlite_path) as experiment_runner:
        experiment_runner.on_specification_failure(None)
        summary = experiment_runner.run(BATCH, SPECIFICATIONS, FailOnOdd(), show_progress=False)
        assert len(summary.completed) == len(COMPLETED)
        assert len(summary.failed) == len(SPECIFICATIONS) - len(COMPLETED)
        yield experiment_runner


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Return every path under ``folder`` (relative, as text) with the bytes of files and None for folders."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() if path.is_file() else None
        for path in sorted(folder.rglob("*"))
    }


def read_pickle(path: Path) -> Any:
    """Unpickle the file at ``path`` (written by this test's own runner, so trusted)."""
    with path.open("rb") as file:
        return pickle.load(file)


def test_export_writes_one_folder_per_completed_specification(runner: ExperimentRunner, tmp_path: Path) -> None:
    """Each completed run gets <hash>/specification.json and <hash>/<hash>.pkl; failed runs get nothing."""
    batch_folder = runner.export(BATCH, tmp_path / "out")

    assert batch_folder == tmp_path / "out" / BATCH
    hashes = {specification_hash(spec): spec for spec in COMPLETED}
    assert {path.name for path in batch_folder.iterdir()} == {*hashes, "completed.json"}
    for spec_hash, spec in hashes.items():
        run_folder = batch_folder / spec_hash
        assert {path.name for path in run_folder.iterdir()} == {"specification.json", f"{spec_hash}.pkl"}
        assert json.loads((run_folder / "specification.json").read_text(encoding="utf-8")) == spec
        assert read_pickle(run_folder / f"{spec_hash}.pkl") == {"specification": spec, "result": {"seed": spec["seed"]}}


def test_completed_json_lists_exactly_the_completed_specifications(runner: ExperimentRunner, tmp_path: Path) -> None:
    """completed.json is a JSON list of the completed specifications, without the failed ones."""
    batch_folder = runner.export(BATCH, tmp_path / "out")

    completed = json.loads((batch_folder / "completed.json").read_text(encoding="utf-8"))
    assert isinstance(completed, list)
    key = specification_hash
    assert sorted(completed, key=key) == sorted(COMPLETED, key=key)


def test_folder_names_are_the_specification_hash_for_awkward_specifications(sqlite_path: str, tmp_path: Path) -> None:
    """Nested, unordered and non-ASCII specifications are filed under smallab_db.specification_hash."""
    specifications = [
        {"seed": 0, "name": "ñandú 🦤", "nested": {"b": [1, 2.5, None], "a": True}},
        {"z": "last key first", "a": {"deep": [[], {}]}},
    ]
    with ExperimentRunner(sqlite_path) as runner:
        runner.run(
            "awkward", specifications, lambda spec: {"echo": spec, "pair": (1, 2), "set": {3}}, show_progress=False
        )
        batch_folder = runner.export("awkward", tmp_path / "out")

    for spec in specifications:
        spec_hash = specification_hash(spec)
        exported = read_pickle(batch_folder / spec_hash / f"{spec_hash}.pkl")
        assert exported == {"specification": spec, "result": {"echo": spec, "pair": (1, 2), "set": {3}}}
        assert json.loads((batch_folder / spec_hash / "specification.json").read_text(encoding="utf-8")) == spec


def test_export_leaves_no_temporary_files(runner: ExperimentRunner, tmp_path: Path) -> None:
    """Every file is renamed into place: nothing whose name starts with '.' is left behind."""
    runner.export(BATCH, tmp_path / "out")

    leftovers = [path for path in (tmp_path / "out").rglob("*") if path.name.startswith(".")]
    assert leftovers == []


def test_exporting_twice_gives_the_same_tree(runner: ExperimentRunner, tmp_path: Path) -> None:
    """A second export over the first one leaves byte-for-byte the same tree."""
    target = tmp_path / "out"
    batch_folder = runner.export(BATCH, target)
    first = snapshot(target)
    assert runner.export(BATCH, target) == batch_folder

    assert snapshot(target) == first
    assert len(first) == 1 + 1 + 3 * len(COMPLETED)  # batch folder, completed.json, and a folder + 2 files per run


def test_re_export_after_completed_runs_failed_matches_a_fresh_export(sqlite_path: str, tmp_path: Path) -> None:
    """Runs that were completed at the first export but failed when run again are not in the second export."""
    specifications = [{"seed": seed} for seed in range(4)]
    with ExperimentRunner(sqlite_path) as runner:
        runner.on_specification_failure(None)
        runner.run("rerun", specifications, lambda spec: {"seed": spec["seed"]}, show_progress=False)
        runner.export("rerun", tmp_path / "out")
        runner.run("rerun", specifications, FailOnOdd(), continue_from_last_run=False, show_progress=False)
        assert [run["specification"] for run in runner.results("rerun", "failed")] == [{"seed": 1}, {"seed": 3}]

        runner.export("rerun", tmp_path / "out")
        runner.export("rerun", tmp_path / "fresh")

    no_longer_completed = {specification_hash(spec) for spec in specifications if spec["seed"] % 2}
    assert {path.name for path in (tmp_path / "out" / "rerun").iterdir()} & no_longer_completed == set()
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "fresh")


def test_a_batch_without_completed_runs_exports_an_empty_list(sqlite_path: str, tmp_path: Path) -> None:
    """A batch whose runs all failed exports only ``completed.json`` holding an empty list."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.on_specification_failure(None)
        runner.run("all-failed", [{"seed": 1}, {"seed": 3}], FailOnOdd(), show_progress=False)
        batch_folder = runner.export("all-failed", tmp_path / "out")

    assert [path.name for path in batch_folder.iterdir()] == ["completed.json"]
    assert json.loads((batch_folder / "completed.json").read_text(encoding="utf-8")) == []


def test_set_experiment_folder_is_the_default_target(runner: ExperimentRunner, tmp_path: Path) -> None:
    """After set_experiment_folder, export without a folder writes to get_batch_save_folder(name)."""
    runner.set_experiment_folder(tmp_path / "runs")
    assert runner.get_batch_save_folder(BATCH) == str(tmp_path / "runs" / BATCH)

    batch_folder = runner.export(BATCH)

    assert batch_folder == Path(runner.get_batch_save_folder(BATCH))
    assert {path.name for path in batch_folder.iterdir()} == {*map(specification_hash, COMPLETED), "completed.json"}


def test_default_target_is_experiment_runs_in_the_working_directory(
    runner: ExperimentRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without set_experiment_folder the target is ./experiment_runs, as in smallab."""
    monkeypatch.chdir(tmp_path)
    assert Path(runner.get_batch_save_folder(BATCH)) == Path("experiment_runs") / BATCH

    runner.export(BATCH)

    assert (tmp_path / "experiment_runs" / BATCH / "completed.json").is_file()


def test_unknown_batch_raises_usage_error_and_creates_nothing(runner: ExperimentRunner, tmp_path: Path) -> None:
    """Exporting a batch that does not exist names it in a UsageError and writes no folder."""
    target = tmp_path / "out"

    with pytest.raises(UsageError, match="no-such-batch"):
        runner.export("no-such-batch", target)

    assert not target.exists()


@pytest.mark.parametrize(
    "blocked",
    ["out", "out/exported", "parent"],
    ids=["target-is-a-file", "batch-folder-is-a-file", "parent-of-target-is-a-file"],
)
def test_a_regular_file_in_the_path_raises_export_error(runner: ExperimentRunner, tmp_path: Path, blocked: str) -> None:
    """A regular file where a folder of the export path should be gives ExportError, not a bare OSError."""
    (tmp_path / blocked).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / blocked).write_text("not a folder")
    target = tmp_path / "parent" / "out" if blocked == "parent" else tmp_path / "out"

    with pytest.raises(ExportError, match=BATCH):
        runner.export(BATCH, target)

    assert (tmp_path / blocked).read_text() == "not a folder"


def test_a_file_in_place_of_a_run_folder_raises_export_error_without_a_partial_completed_json(
    runner: ExperimentRunner, tmp_path: Path
) -> None:
    """A file where a run's folder should go gives ExportError; completed.json and temporary files are not left."""
    target = tmp_path / "out"
    batch_folder = target / BATCH
    batch_folder.mkdir(parents=True)
    (batch_folder / specification_hash(COMPLETED[-1])).write_text("not a folder")

    with pytest.raises(ExportError):
        runner.export(BATCH, target)

    assert not (batch_folder / "completed.json").exists()
    assert [path for path in target.rglob("*") if path.name.startswith(".")] == []
