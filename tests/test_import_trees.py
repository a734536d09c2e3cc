"""Importing folder trees that are not what they seem, in both layouts: records whose result or specification is not
a dict, symbolic links leading out of the batch folder or to folders, and folders that cannot be looked at."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from smallab_db import ExperimentRunner, UsageError, specification_hash

LAYOUTS = ["seed", "smallab2"]
SEEDS = [{"seed": seed} for seed in range(3)]


def exported(database: Path, folder: Path, layout: str) -> Path:
    """Batch ``done`` of three runs with JSON results, exported in ``layout``; return its batch folder."""
    with ExperimentRunner(database) as runner:
        runner.run("done", SEEDS, lambda spec: {"seed": spec["seed"]}, show_progress=False)
        return runner.export("done", folder, layout)


def run_file(batch_folder: Path, layout: str, specification: dict[str, Any]) -> Path:
    """The file holding a run's record in the tree."""
    spec_hash = specification_hash(specification)
    if layout == "seed":
        return batch_folder / spec_hash / f"{spec_hash}.pkl"
    return batch_folder / "experiments" / spec_hash / "run.json"


def write_record(path: Path, record: Any) -> None:
    """Write ``record`` where a run's record goes: pickled for the seed layout's ``.pkl``, else as JSON."""
    path.write_bytes(pickle.dumps(record) if path.suffix == ".pkl" else json.dumps(record).encode())


def imported_seeds(database: Path, name: str) -> list[int]:
    """The seeds of the completed runs of batch ``name``."""
    with ExperimentRunner(database) as runner:
        return sorted(run["specification"]["seed"] for run in runner.results(name))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"specification": {"seed": 0}, "result": 5}, "its result is a int, not a dict"),
        ({"specification": {"seed": 0}, "result": [1, 2, 3]}, "its result is a list, not a dict"),
        ({"specification": [("seed", 0)], "result": {}}, "its specification is a list, not a dict"),
        ({"specification": "seed=0", "result": {}}, "its specification is a str, not a dict"),
        ([{"seed": 0}, {}], "not a {'specification': ..., 'result': ...} record"),
        ({"result": {}}, "not a {'specification': ..., 'result': ...} record"),
    ],
    ids=["int-result", "list-result", "list-specification", "str-specification", "list", "no-specification"],
)
def test_a_record_that_is_not_a_dict_of_dicts_is_reported_and_skipped(
    tmp_path: Path, layout: str, record: Any, reason: str
) -> None:
    """A run file whose result or specification is not a dict is reported with its path and the reason, and
    skipped; the other runs are imported."""
    database = tmp_path / "runs.db"
    batch_folder = exported(database, tmp_path / "out", layout)
    damaged = run_file(batch_folder, layout, SEEDS[0])
    write_record(damaged, record)

    with ExperimentRunner(database) as runner:
        report = runner.import_folder(batch_folder, "copy")

    assert [(item.path, item.reason) for item in report.unreadable] == [(damaged, reason)]
    assert report.imported == 2
    assert imported_seeds(database, "copy") == [1, 2]


def outside_run(tmp_path: Path, layout: str) -> Path:
    """A readable run (seed 99) in a tree outside the batch folder being imported; return its run folder."""
    with ExperimentRunner(tmp_path / "elsewhere.db") as runner:
        runner.run("elsewhere", [{"seed": 99}], lambda spec: {"seed": spec["seed"]}, show_progress=False)
        outside = runner.export("elsewhere", tmp_path / "outside", layout)
    return run_file(outside, layout, {"seed": 99}).parent


def link_place(batch_folder: Path, layout: str, name: str) -> Path:
    """Where a run folder called ``name`` goes in the tree."""
    return (batch_folder if layout == "seed" else batch_folder / "experiments") / name


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_symbolic_link_to_a_run_folder_outside_the_tree_is_reported_and_not_read(tmp_path: Path, layout: str) -> None:
    """A run folder that is a link to a folder outside the batch folder is reported with the link's path and
    skipped: the run it leads to is not imported."""
    database = tmp_path / "runs.db"
    batch_folder = exported(database, tmp_path / "out", layout)
    target = outside_run(tmp_path, layout)
    link = link_place(batch_folder, layout, target.name)
    link.symlink_to(target, target_is_directory=True)

    with ExperimentRunner(database) as runner:
        report = runner.import_folder(batch_folder, "copy")

    assert [item.path for item in report.unreadable] == [link]
    assert "symbolic link to the folder" in report.unreadable[0].reason and "not follow" in report.unreadable[0].reason
    assert imported_seeds(database, "copy") == [0, 1, 2]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_symbolic_link_to_a_run_file_outside_the_tree_is_reported_and_not_read(tmp_path: Path, layout: str) -> None:
    """A run file that is a link to a file outside the batch folder is reported and skipped, unread."""
    database = tmp_path / "runs.db"
    batch_folder = exported(database, tmp_path / "out", layout)
    target = outside_run(tmp_path, layout)
    own = run_file(batch_folder, layout, SEEDS[0])
    outside_file = next(path for path in target.iterdir() if path.name in ("run.json", f"{target.name}.pkl"))
    own.unlink()
    own.symlink_to(outside_file)

    with ExperimentRunner(database) as runner:
        report = runner.import_folder(batch_folder, "copy")

    assert [item.path for item in report.unreadable] == [own]
    assert (
        "outside the batch folder" in report.unreadable[0].reason and str(outside_file) in report.unreadable[0].reason
    )
    assert imported_seeds(database, "copy") == [1, 2]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inside_the_tree_links_to_files_are_read_and_links_to_folders_are_reported(tmp_path: Path, layout: str) -> None:
    """Inside the batch folder, a link to a run file is read like the file; a link to a run folder (an alias of
    another run's, or for smallab2 a loop) is reported and not followed, so no run is read twice and no walk loops."""
    database = tmp_path / "runs.db"
    batch_folder = exported(database, tmp_path / "out", layout)
    own = run_file(batch_folder, layout, SEEDS[0])
    moved = batch_folder / "kept" / own.name
    moved.parent.mkdir()
    own.rename(moved)
    own.symlink_to(os.path.relpath(moved, own.parent))
    links = [link_place(batch_folder, layout, "alias")]
    links[0].symlink_to(specification_hash(SEEDS[1]), target_is_directory=True)
    if layout == "smallab2":
        links.append(link_place(batch_folder, layout, "loop"))
        links[1].symlink_to(".", target_is_directory=True)

    with ExperimentRunner(database) as runner:
        report = runner.import_folder(batch_folder, "copy")

    assert [item.path for item in report.unreadable] == links
    assert all("symbolic link to the folder" in item.reason for item in report.unreadable)
    assert (report.imported, report.already_present) == (3, 0)
    assert imported_seeds(database, "copy") == [0, 1, 2]


def test_a_folder_path_too_long_to_look_at_is_a_usage_error(tmp_path: Path) -> None:
    """``import_folder`` on a path the file system refuses to look up names the fix instead of raising OSError."""
    with ExperimentRunner(tmp_path / "runs.db") as runner, pytest.raises(UsageError, match="give a shorter path"):
        runner.import_folder(tmp_path / ("x" * 10_000), "copy")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_importing_completes_every_failed_run_the_tree_holds(tmp_path: Path, layout: str) -> None:
    """Several runs pending or failed in the batch are turned completed in one statement (executed many times)."""
    batch_folder = exported(tmp_path / "runs.db", tmp_path / "out", layout)
    with ExperimentRunner(tmp_path / "runs.db") as runner:
        runner.on_specification_failure(None)
        runner.run("again", SEEDS, lambda spec: 1 / 0, show_progress=False)
        report = runner.import_folder(batch_folder, "again")
    assert report.imported == 3
    assert imported_seeds(tmp_path / "runs.db", "again") == [0, 1, 2]
