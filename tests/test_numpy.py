"""numpy, which nearly every experiment uses: scalars and arrays in results are queryable JSON, numpy scalars in
specifications are their plain values, and the generator expands arrays as lists. numpy is a test dependency only:
smallab-db itself never imports it."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from typing import Any

import numpy as np
import pandas
import processes
import pytest
import sqlalchemy

from smallab_db import ExperimentRunner, SpecError, SpecificationGenerator, specification_hash
from smallab_db.codec import queryable_json


def numpy_result(specification: dict[str, Any]) -> dict[str, Any]:
    """A result as experiments return them: numpy scalars of several kinds, arrays, and plain values beside them."""
    seed = specification["seed"]
    return {
        "seed": np.int64(seed),
        "loss": np.float32(0.5) * seed,
        "mean": np.mean(np.arange(seed + 1)),
        "converged": np.bool_(seed % 2 == 0),
        "curve": np.arange(3) * seed,
        "matrix": np.eye(2),
        "name": np.str_(f"run{seed}"),
        "plain": [seed, {"nested": np.int32(seed)}],
    }


def stored_json(database_url: str, batch: str) -> list[Any]:
    """The ``result_json`` of the batch's runs, in run order, as the database returns it (decoded)."""
    engine = sqlalchemy.create_engine(database_url if "://" in database_url else f"sqlite:///{database_url}")
    try:
        with engine.connect() as connection:
            values = connection.exec_driver_sql(
                f"SELECT result_json FROM run_details WHERE batch = '{batch}' ORDER BY run_id"
            ).scalars()
            return [json.loads(value) if isinstance(value, str) else value for value in values]
    finally:
        engine.dispose()


def test_a_result_with_numpy_values_is_plain_json_in_result_json(database_url: str) -> None:
    """numpy scalars and arrays in a result become plain numbers and lists in ``result_json``, on both databases,
    and SQL reads them; the pickle keeps the exact numpy objects."""
    with ExperimentRunner(database_url) as runner:
        summary = runner.run("numpy", [{"seed": 1}, {"seed": 2}], numpy_result, show_progress=False)
        assert len(summary.completed) == 2
        results = runner.results("numpy")

    assert stored_json(database_url, "numpy") == [
        {
            "seed": seed,
            "loss": 0.5 * seed,
            "mean": seed / 2,
            "converged": seed % 2 == 0,
            "curve": [0, seed, 2 * seed],
            "matrix": [[1.0, 0.0], [0.0, 1.0]],
            "name": f"run{seed}",
            "plain": [seed, {"nested": seed}],
        }
        for seed in (1, 2)
    ]
    first = results[0]["result"]
    assert type(first["seed"]) is np.int64 and type(first["loss"]) is np.float32
    assert type(first["curve"]) is np.ndarray and first["curve"].tolist() == [0, 1, 2]
    assert type(first["converged"]) is np.bool_


def test_the_docs_sql_sees_a_run_with_a_numpy_result(sqlite_path: str) -> None:
    """A result's numpy number is what ``json_extract`` (the Querying page's SQL) reads, not NULL."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("doubling", [{"seed": 3}], lambda spec: {"number": np.int64(spec["seed"]) * 2}, show_progress=False)
    engine = sqlalchemy.create_engine(f"sqlite:///{sqlite_path}")
    try:
        with engine.connect() as connection:
            sql = "SELECT json_extract(result_json, '$.number') FROM run_details WHERE batch = 'doubling'"
            assert connection.exec_driver_sql(sql).scalars().all() == [6]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "value",
    [np.array([np.nan]), np.float64(np.inf), {1, 2}, np.datetime64("2024-01-01T12:00:00")],
    ids=["nan-array", "infinity", "set", "datetime64"],
)
def test_values_json_cannot_hold_still_leave_result_json_null(value: Any) -> None:
    """NaN and infinity (also inside an array), a set, and a numpy value whose ``tolist()`` is no JSON value (a
    ``datetime``)."""
    assert queryable_json({"value": value}) is None


def test_anything_with_a_tolist_method_is_stored_as_what_it_returns() -> None:
    """Not only numpy: a pandas Series, and any object whose ``tolist()`` gives JSON values."""

    class Measurements:
        def tolist(self) -> list[float]:
            return [1.5, 2.5]

    assert json.loads(queryable_json({"s": pandas.Series([1, 2]), "m": Measurements()}) or "null") == {
        "s": [1, 2],
        "m": [1.5, 2.5],
    }


def test_a_failing_tolist_method_leaves_result_json_null_and_completes_the_run(sqlite_path: str) -> None:
    """A ``tolist()`` that raises makes the result not JSON: the run completes with its pickle."""
    with ExperimentRunner(sqlite_path) as runner:
        summary = runner.run("odd", [{"seed": 1}], lambda spec: {"odd": BrokenToList()}, show_progress=False)
        assert len(summary.completed) == 1
        assert isinstance(runner.results("odd")[0]["result"]["odd"], BrokenToList)
    assert stored_json(sqlite_path, "odd") == [None]


class BrokenToList:
    """An object whose ``tolist()`` raises."""

    def tolist(self) -> list[int]:
        raise RuntimeError("no list today")


# -- specifications ----------------------------------------------------------------------------------------------

NUMPY_SCALARS = {
    "int64": (np.int64(3), 3),
    "int32": (np.int32(-7), -7),
    "uint8": (np.uint8(255), 255),
    "float64": (np.float64(0.1), 0.1),
    "float32": (np.float32(0.5), 0.5),
    "bool": (np.bool_(True), True),
    "str": (np.str_("adam"), "adam"),
    "zero-dimensional-array": (np.array(4), 4),
}


@pytest.mark.parametrize("scalar, plain", list(NUMPY_SCALARS.values()), ids=list(NUMPY_SCALARS))
def test_a_numpy_scalar_in_a_specification_hashes_as_the_equal_plain_value(scalar: Any, plain: Any) -> None:
    """``{"x": np.int64(3)}`` is the specification ``{"x": 3}``: same hash, at any depth."""
    assert type(scalar) is not type(plain)
    assert specification_hash({"x": scalar}) == specification_hash({"x": plain})
    assert specification_hash({"a": [{"x": scalar}]}) == specification_hash({"a": [{"x": plain}]})


def test_numpy_scalars_in_specifications_run_as_the_plain_values(database_url: str) -> None:
    """A run given numpy scalars stores and hands ``main`` the plain values, and is the same run as the plain
    specification: running the plain one afterwards runs nothing."""
    seen: list[dict[str, Any]] = []

    def record(specification: dict[str, Any]) -> dict[str, Any]:
        seen.append(specification)
        return {}

    given = [{"seed": np.int64(seed), "lr": np.float32(0.5), "adam": np.bool_(True)} for seed in range(3)]
    with ExperimentRunner(database_url) as runner:
        summary = runner.run("numpy-specs", given, record, show_progress=False)
        again = runner.run("numpy-specs", [{"seed": s, "lr": 0.5, "adam": True} for s in range(3)], record)

    plain = [{"adam": True, "lr": 0.5, "seed": seed} for seed in range(3)]
    assert seen == plain and all(type(spec["seed"]) is int for spec in seen)
    assert summary.completed == plain
    assert (again.completed, again.skipped) == ([], 3)


@pytest.mark.parametrize("array", [np.arange(3), np.zeros((2, 2))], ids=["1-d", "2-d"])
def test_a_numpy_array_in_a_specification_is_refused_naming_tolist(sqlite_path: str, array: Any) -> None:
    """An array is not a JSON value equal to itself: the error names the key path and ``.tolist()``."""
    with ExperimentRunner(sqlite_path) as runner, pytest.raises(SpecError) as raised:
        runner.run("arrays", [{"seed": 1}, {"weights": array}], lambda spec: {}, show_progress=False)
    message = str(raised.value)
    assert "specification #1" in message and "key path weights" in message and ".tolist()" in message


@pytest.mark.parametrize("value", [np.float64(np.nan), np.datetime64("2024-01-01")], ids=["nan", "datetime64"])
def test_a_numpy_scalar_json_cannot_hold_is_refused(value: Any) -> None:
    """A numpy NaN is refused as NaN is; a numpy date is refused as a date is."""
    with pytest.raises(SpecError, match="key path x"):
        specification_hash({"x": value})


# -- the generator -----------------------------------------------------------------------------------------------


def test_the_generator_expands_a_numpy_array_as_a_list() -> None:
    """``{"seed": np.arange(3)}`` gives three specifications, as ``[0, 1, 2]`` does, with plain values."""
    generated = SpecificationGenerator().generate({"seed": np.arange(3), "lr": [0.1, 0.2]})
    assert generated == SpecificationGenerator().generate({"seed": [0, 1, 2], "lr": [0.1, 0.2]})
    assert all(type(spec["seed"]) is int for spec in generated)


def test_the_generator_expands_the_rows_of_a_two_dimensional_array_and_a_series() -> None:
    """A 2-D array's choices are its rows, as lists; a pandas Series' are its values."""
    generated = SpecificationGenerator().generate({"layers": np.array([[64, 64], [128, 32]]), "k": pandas.Series([1])})
    assert generated == [{"k": 1, "layers": [64, 64]}, {"k": 1, "layers": [128, 32]}]


def test_the_generated_specifications_of_an_array_run(sqlite_path: str) -> None:
    """The whole path a user takes: generate from ``np.linspace``, run, and read back."""
    generated = SpecificationGenerator().generate({"lr": np.linspace(0.0, 1.0, 3)})
    with ExperimentRunner(sqlite_path) as runner:
        summary = runner.run("grid", generated, lambda spec: {"twice": spec["lr"] * 2}, show_progress=False)
        assert summary.completed == [{"lr": 0.0}, {"lr": 0.5}, {"lr": 1.0}]


# -- numpy stays a test dependency -------------------------------------------------------------------------------


def test_smallab_db_runs_without_numpy() -> None:
    """With numpy impossible to import, smallab-db imports, runs a batch (in worker processes too), stores JSON
    results and reads them back; and numpy is not among its dependencies."""
    script = (
        "import sys, tempfile, os\n"
        "sys.modules['numpy'] = None  # import numpy now raises ImportError\n"
        "from smallab_db import ExperimentRunner, SpecificationGenerator\n"
        "specifications = SpecificationGenerator().generate({'s': [1, 2]})\n"
        "with ExperimentRunner(os.path.join(tempfile.mkdtemp(), 'r.db')) as runner:\n"
        "    runner.run('b', specifications, dict, num_parallel=2, backend='threading', show_progress=False)\n"
        "    print(runner.results('b'))\n"
    )
    process = processes.run([sys.executable, "-c", script], text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert (
        process.stdout
        == "[{'specification': {'s': 1}, 'result': {'s': 1}}, {'specification': {'s': 2}, 'result': {'s': 2}}]\n"
    )
    requirements = importlib.metadata.requires("smallab-db") or []
    assert not [
        requirement for requirement in requirements if requirement.startswith("numpy") and "extra" not in requirement
    ]
