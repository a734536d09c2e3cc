"""SpecificationGenerator and MultiComputerGenerator: grids into specifications, and shares between computers."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smallab_db import MultiComputerGenerator, SpecError, SpecificationGenerator, UsageError, specification_hash


def storable_text(**bounds: int) -> st.SearchStrategy[str]:
    """Text a specification may hold: anything but lone surrogates and NUL (refused: UTF-8 cannot encode the
    former, PostgreSQL cannot query the latter in JSON)."""
    return st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), **bounds)


GRID = {"seed": [1, 2, 3], "size": [10, 20], "method": ["a", "b"], "fixed": "yes"}

# Grids of a few keys, each a list of distinct choices (possibly empty) or a plain value.
grids = st.dictionaries(
    storable_text(min_size=1, max_size=5),
    st.lists(st.integers(-5, 5) | storable_text(max_size=3), max_size=4, unique=True) | st.integers() | st.none(),
    max_size=4,
)


def specs_of(path: Path, content: Any) -> list[dict[str, Any]]:
    """Write ``content`` as JSON to ``path`` and read it back with SpecificationGenerator.from_json_file."""
    path.write_text(json.dumps(content), encoding="utf-8")
    return SpecificationGenerator().from_json_file(path)


# -- SpecificationGenerator.generate ------------------------------------------------------------------------------


def test_generate_is_the_cross_product_with_keys_in_sorted_order() -> None:
    """Every combination of choices appears once, ordered as the product over the sorted keys."""
    specifications = SpecificationGenerator().generate({"b": [3, 4], "a": [1, 2]})

    assert specifications == [{"a": 1, "b": 3}, {"a": 1, "b": 4}, {"a": 2, "b": 3}, {"a": 2, "b": 4}]
    assert all(list(spec) == ["a", "b"] for spec in specifications)


def test_generate_copies_non_list_values_into_every_specification() -> None:
    """Values that are not lists, dicts included, appear unchanged in every specification."""
    specifications = SpecificationGenerator().generate(GRID)

    assert len(specifications) == 3 * 2 * 2
    assert all(spec["fixed"] == "yes" for spec in specifications)
    combinations = {(spec["seed"], spec["size"], spec["method"]) for spec in specifications}
    assert combinations == set(itertools.product([1, 2, 3], [10, 20], ["a", "b"]))


def test_double_brackets_give_a_literal_list() -> None:
    """``[[64, 64]]`` is one choice, the list ``[64, 64]``; ``[[1], [2, 3]]`` is two list choices."""
    generator = SpecificationGenerator()

    assert generator.generate({"layers": [[64, 64]], "seed": 1}) == [{"layers": [64, 64], "seed": 1}]
    assert generator.generate({"layers": [[1], [2, 3]]}) == [{"layers": [1]}, {"layers": [2, 3]}]


@pytest.mark.parametrize("grid", [{}, {"seed": 1}, {"seed": 1, "config": {"depth": [1, 2]}, "name": None}])
def test_no_list_values_give_exactly_one_specification(grid: dict[str, Any]) -> None:
    """Without list values the generation specification is the only specification (a dict's lists are kept)."""
    assert SpecificationGenerator().generate(grid) == [grid]


def test_an_empty_list_of_choices_gives_no_specification() -> None:
    """A cross product with an empty factor is empty."""
    assert SpecificationGenerator().generate({"seed": [1, 2], "size": []}) == []


def test_specifications_share_no_mutable_object_with_the_input_or_each_other() -> None:
    """Mutating one generated specification changes neither the input nor the other specifications."""
    grid = {"config": {"depth": [1, 2]}, "layers": [[64, 64]], "seed": [1, 2], "tags": [["x"], ["y"]]}
    original = json.loads(json.dumps(grid))
    specifications = SpecificationGenerator().generate(grid)
    assert len(specifications) == 4

    first, *others = specifications
    first["config"]["depth"].append(3)
    first["layers"].append(128)
    first["tags"].append("z")

    assert grid == original
    assert all(spec["config"] == {"depth": [1, 2]} and spec["layers"] == [64, 64] for spec in others)
    assert [spec["tags"] for spec in others] == [["y"], ["x"], ["y"]]


@given(grids)
def test_generate_gives_the_product_of_the_choice_counts(grid: dict[str, Any]) -> None:
    """The number of specifications is the product of the lengths of the list values, all hashable as JSON."""
    specifications = SpecificationGenerator().generate(grid)

    assert len(specifications) == math.prod(len(value) for value in grid.values() if isinstance(value, list))
    for spec in specifications:
        assert list(spec) == sorted(grid)
        assert all(spec[key] == value for key, value in grid.items() if not isinstance(value, list))
        specification_hash(spec)  # each one is a valid specification


@pytest.mark.parametrize("generator", [SpecificationGenerator(), MultiComputerGenerator(0, 2)], ids=type)
@pytest.mark.parametrize("not_a_dict", [[{"seed": [1, 2]}], "seed", None, 3, ({"seed": 1},)])
def test_generate_of_a_non_dict_raises_spec_error(generator: SpecificationGenerator, not_a_dict: Any) -> None:
    """Only a dict is a generation specification."""
    with pytest.raises(SpecError, match="must be a dict"):
        generator.generate(not_a_dict)


def test_generate_with_keys_that_cannot_be_sorted_raises_spec_error() -> None:
    """Mixed int and str keys are a user error, so the docs promise a SmallabError (SpecError), not TypeError."""
    with pytest.raises(SpecError):
        SpecificationGenerator().generate({1: [1, 2], "seed": [3]})


# -- SpecificationGenerator.from_json_file ------------------------------------------------------------------------


def test_from_json_file_reads_a_dict(tmp_path: Path) -> None:
    """A file holding one generation specification gives its cross product."""
    assert specs_of(tmp_path / "grid.json", GRID) == SpecificationGenerator().generate(GRID)


def test_from_json_file_reads_a_list_of_dicts_in_order(tmp_path: Path) -> None:
    """A file holding a list gives the specifications of each item, one item after the other."""
    grids_in_file = [{"seed": [1, 2], "model": "small"}, {"seed": [3], "model": "large", "layers": [[8, 8]]}]

    assert specs_of(tmp_path / "grids.json", grids_in_file) == [
        {"model": "small", "seed": 1},
        {"model": "small", "seed": 2},
        {"layers": [8, 8], "model": "large", "seed": 3},
    ]


def test_from_json_file_accepts_a_str_path(tmp_path: Path) -> None:
    """The path may be a str as well as a Path."""
    path = tmp_path / "grid.json"
    path.write_text('{"seed": [1, 2]}', encoding="utf-8")

    assert SpecificationGenerator().from_json_file(str(path)) == [{"seed": 1}, {"seed": 2}]


@pytest.mark.parametrize("text", ['{"seed": [1, 2]', "", "not json", "{'seed': 1}", "\udcff"], ids=repr)
def test_from_json_file_with_bad_json_raises_spec_error_naming_the_path(tmp_path: Path, text: str) -> None:
    """A file that is not valid JSON (or not UTF-8) raises SpecError with the file's path in the message."""
    path = tmp_path / "bad grid.json"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))

    with pytest.raises(SpecError) as raised:
        SpecificationGenerator().from_json_file(path)

    assert str(path) in str(raised.value)


def test_from_json_file_of_a_missing_file_raises_spec_error_naming_the_path(tmp_path: Path) -> None:
    """A file that does not exist raises SpecError with its path in the message."""
    path = tmp_path / "missing.json"

    with pytest.raises(SpecError, match="missing.json"):
        SpecificationGenerator().from_json_file(path)


@pytest.mark.parametrize("content", [3, "seed", None, [{"seed": 1}, 2]], ids=repr)
def test_from_json_file_without_dicts_raises_spec_error(tmp_path: Path, content: Any) -> None:
    """A file holding JSON that is neither a dict nor a list of dicts raises SpecError."""
    with pytest.raises(SpecError):
        specs_of(tmp_path / "grid.json", content)


# -- MultiComputerGenerator ---------------------------------------------------------------------------------------


def shares(number_of_computers: int, grid: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Return the share of each computer ``0 … n-1`` of ``grid``."""
    return [MultiComputerGenerator(i, number_of_computers).generate(grid) for i in range(number_of_computers)]


def assert_disjoint_and_whole(parts: list[list[dict[str, Any]]], whole: list[dict[str, Any]]) -> None:
    """Check that ``parts`` are disjoint and that together they are exactly ``whole``."""
    hashes = [specification_hash(spec) for part in parts for spec in part]
    assert len(hashes) == len(set(hashes)), "a specification is in two shares"
    assert sorted(hashes) == sorted(specification_hash(spec) for spec in whole)


@pytest.mark.parametrize("number_of_computers", range(1, 15))
def test_shares_are_disjoint_balanced_and_together_the_whole(number_of_computers: int) -> None:
    """The n shares of a 12-specification grid are disjoint, together the whole, and differ in size by at most 1."""
    parts = shares(number_of_computers, GRID)

    assert_disjoint_and_whole(parts, SpecificationGenerator().generate(GRID))
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1


@given(grid=grids, number_of_computers=st.integers(1, 8))
def test_shares_are_disjoint_and_whole_for_any_grid(grid: dict[str, Any], number_of_computers: int) -> None:
    """For any grid and any number of computers, the shares partition the cross product."""
    assert_disjoint_and_whole(shares(number_of_computers, grid), SpecificationGenerator().generate(grid))


def test_single_computer_gets_everything() -> None:
    """With one computer its share is the whole list, in order."""
    assert MultiComputerGenerator(0, 1).generate(GRID) == SpecificationGenerator().generate(GRID)


def test_shares_from_a_json_list_are_disjoint_and_whole(tmp_path: Path) -> None:
    """from_json_file on a MultiComputerGenerator also gives disjoint shares that are together the whole file."""
    path = tmp_path / "grids.json"
    path.write_text(json.dumps([{"seed": [1, 2, 3]}, {"seed": [4, 5], "big": True}]), encoding="utf-8")
    parts = [MultiComputerGenerator(i, 3).from_json_file(path) for i in range(3)]

    assert_disjoint_and_whole(parts, SpecificationGenerator().from_json_file(path))


@pytest.mark.parametrize(
    ("computer_number", "number_of_computers"),
    [(-1, 2), (2, 2), (5, 2), (0, 0), (0, -1), (1.0, 2), (0, 2.0), ("0", 2), (0, None), (True, 2), (0, True)],
    ids=repr,
)
def test_bad_computer_numbers_raise_usage_error(computer_number: Any, number_of_computers: Any) -> None:
    """computer_number must be an int in 0 … n-1 and number_of_computers a positive int (bools are not ints here)."""
    with pytest.raises(UsageError):
        MultiComputerGenerator(computer_number, number_of_computers)
