"""Specification validation, canonical JSON and the stable hash."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import processes
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smallab_db import ExperimentRunner, SpecError, specification_hash
from smallab_db.codec import canonical_json
from smallab_db.specification import validate_all


def storable_text(**bounds: int) -> st.SearchStrategy[str]:
    """Text a specification may hold: anything but lone surrogates and NUL (refused: UTF-8 cannot encode the
    former, PostgreSQL cannot query the latter in JSON)."""
    return st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), **bounds)


TESTS = Path(__file__).resolve().parent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | storable_text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(storable_text(max_size=8), children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(storable_text(max_size=8), json_values, max_size=6)


def expected_hash(specification: dict[str, Any]) -> str:
    """The documented formula, written out independently of the package."""
    text = json.dumps(specification, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_hash_follows_the_documented_formula() -> None:
    specification = {"b": [1, 2.5, None], "a": {"é": True}}
    assert specification_hash(specification) == expected_hash(specification)
    assert specification_hash({"seed": 1}) == hashlib.sha256(b'{"seed":1}').hexdigest()


def test_true_and_one_are_different_specifications() -> None:
    assert specification_hash({"x": True}) != specification_hash({"x": 1})
    assert specification_hash({"x": 1}) != specification_hash({"x": 1.0})


def test_hash_is_stable_across_processes_with_different_hash_seeds() -> None:
    specification = {"seed": 3, "name": "ünïcode", "nested": {"b": [1, 2], "a": None}}
    program = (
        "import json, sys; from smallab_db import specification_hash; "
        "print(specification_hash(json.loads(sys.argv[1])))"
    )
    hashes = set()
    for hash_seed in ("1", "2", "12345"):
        completed = processes.run(
            [sys.executable, "-c", program, json.dumps(specification)],
            text=True,
            check=True,
            timeout=60,
            env={"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"},
            cwd=TESTS.parent.parent,
        )
        hashes.add(completed.stdout.strip())
    assert hashes == {specification_hash(specification)}


@pytest.mark.parametrize(
    ("specifications", "named"),
    [
        ([{"a": float("nan")}], "#0 is not valid JSON at key path a"),
        ([{"ok": 1}, {"a": {"b": float("inf")}}], "#1 is not valid JSON at key path a.b"),
        ([{"a": {1, 2}}], "set"),
        ([{"a": (1, 2)}], "tuple"),
        ([{"a": [1, {2: "x"}]}], "key 2 is a int"),
        ([{"a": object()}], "object"),
        ([{"a": b"bytes"}], "bytes"),
        ([{"ok": 1}, ["not", "a", "dict"]], "specification #1 must be a dict"),
        ([{"a": [0, [1, float("-inf")]]}], "key path a[1][1]"),
    ],
)
def test_invalid_specifications_are_named(specifications: list[Any], named: str) -> None:
    with pytest.raises(SpecError, match=named.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        validate_all(specifications)


@pytest.mark.parametrize("not_a_list", [{"seed": 1}, "seed", 42, None])
def test_a_specification_list_must_be_a_list(not_a_list: Any) -> None:
    with pytest.raises(SpecError, match="specifications must be a list of dicts"):
        validate_all(not_a_list)


def test_a_bad_specification_writes_nothing(sqlite_path: str) -> None:
    runner = ExperimentRunner(sqlite_path)
    runner.run("kept", [{"seed": 1}], lambda specification: {"ok": True}, show_progress=False)
    executed: list[dict[str, Any]] = []
    with pytest.raises(SpecError):
        runner.run("new", [{"seed": 2}, {"seed": float("nan")}], executed.append, show_progress=False)
    assert executed == []
    assert [name for name, _ in runner.store.batch_counts()] == ["kept"]
    assert runner.results("kept") == [{"specification": {"seed": 1}, "result": {"ok": True}}]


@settings(max_examples=200, deadline=None)
@given(json_objects)
def test_generated_objects_round_trip_and_hash_like_the_formula(specification: dict[str, Any]) -> None:
    validate_all([specification])
    assert json.loads(canonical_json(specification)) == specification
    assert specification_hash(specification) == expected_hash(specification)


@settings(max_examples=200, deadline=None)
@given(json_objects, st.randoms(use_true_random=False))
def test_key_order_never_changes_the_hash(specification: dict[str, Any], random: Any) -> None:
    items = list(specification.items())
    random.shuffle(items)
    assert specification_hash(dict(items)) == specification_hash(specification)


@settings(max_examples=100, deadline=None)
@given(st.lists(json_objects, min_size=2, max_size=30))
def test_distinct_objects_never_collide(specifications: list[dict[str, Any]]) -> None:
    by_text = {canonical_json(specification): specification_hash(specification) for specification in specifications}
    assert len(set(by_text.values())) == len(by_text)


def test_a_lone_surrogate_is_refused_with_its_key_path() -> None:
    undecodable = b"run-\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(SpecError, match="key path path: .*lone surrogate"):
        validate_all([{"path": undecodable}])
    with pytest.raises(SpecError, match="lone surrogate"):
        specification_hash({undecodable: 1})


awkward_floats = st.sampled_from([1e16, 1e-7, 1e300, -0.0, 0.1, 2.5e-320])
stored_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | awkward_floats
    | storable_text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(storable_text(max_size=6), children, max_size=3),
    max_leaves=12,
)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_specifications_come_back_from_the_database_unchanged(
    database: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = str(tmp_path / "runs.db") if database == "sqlite" else request.getfixturevalue("postgres_url")
    runner = ExperimentRunner(url)
    seen: list[dict[str, Any]] = []

    @settings(max_examples=40, deadline=None)
    @given(st.dictionaries(storable_text(max_size=6), stored_values, min_size=1, max_size=4))
    def round_trip(specification: dict[str, Any]) -> None:
        seen.clear()
        summary = runner.run(
            "trip",
            [specification],
            lambda spec: seen.append(spec) or {"echo": spec},
            continue_from_last_run=False,
            show_progress=False,
        )
        assert summary.completed == [specification]
        assert [canonical_json(spec) for spec in seen] == [canonical_json(specification)]  # what main received
        stored = [
            run
            for run in runner.results("trip")
            if canonical_json(run["specification"]) == canonical_json(specification)
        ]
        assert len(stored) == 1
        assert specification_hash(stored[0]["specification"]) == specification_hash(specification)
        assert canonical_json(stored[0]["result"]["echo"]) == canonical_json(specification)

    round_trip()
    runner.close()


def test_values_equal_in_python_but_different_in_json_are_different_specifications() -> None:
    variants = [{"x": 1}, {"x": 1.0}, {"x": True}, {"x": 0.0}, {"x": -0.0}, {"x": False}, {"x": 0}]
    assert len({canonical_json(variant) for variant in variants}) == len(variants)
    assert len({specification_hash(variant) for variant in variants}) == len(variants)
