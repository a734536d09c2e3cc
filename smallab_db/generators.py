"""Expanding parameter grids into specifications, and sharing them out between computers."""

from __future__ import annotations

import copy
import itertools
import json
import os
from typing import Any, cast

from smallab_db.errors import SpecError, UsageError
from smallab_db.experiment import Specification


class SpecificationGenerator:
    """Expands a generation specification: every list value is a choice, and all choices are crossed."""

    def generate(self, generation_specification: dict[str, Any]) -> list[Specification]:
        """Return the cross product of the list values, keys in sorted order.

        ``{"a": [1, 2], "b": [3]}`` gives ``[{"a": 1, "b": 3}, {"a": 2, "b": 3}]``. A list value that should stay a
        list goes in double brackets: ``{"layers": [[64, 64]]}`` gives ``[{"layers": [64, 64]}]``. An array (numpy's
        ``np.arange(3)``, a pandas Series) lists choices as a list does, each its plain value.

        Raises:
            SpecError: ``generation_specification`` is not a dict with string keys.
        """
        return self._share(_cross_product(generation_specification))

    def from_json_file(self, path: str | os.PathLike[str]) -> list[Specification]:
        """Read a generation specification, or a list of them, from a JSON file and expand it.

        Raises:
            SpecError: the file is not valid JSON, or does not hold a dict or a list of dicts.
        """
        try:
            with open(path, encoding="utf-8") as file:
                loaded = json.load(file)
        except (OSError, ValueError) as error:
            raise SpecError(f"cannot read specifications from {os.fspath(path)!r}: {error}") from error
        items = loaded if isinstance(loaded, list) else [loaded]
        return self._share([specification for item in items for specification in _cross_product(item)])

    def _share(self, specifications: list[Specification]) -> list[Specification]:
        """Return the part of ``specifications`` this generator hands out: all of them."""
        return specifications


class MultiComputerGenerator(SpecificationGenerator):
    """Gives computer ``computer_number`` of ``number_of_computers`` every n-th specification, from its own.

    The shares of computers ``0 … n-1`` are disjoint and together are the whole list.
    """

    def __init__(self, computer_number: int, number_of_computers: int) -> None:
        if type(number_of_computers) is not int or number_of_computers < 1:
            raise UsageError(f"number_of_computers must be a positive int, but got {number_of_computers!r}")
        if type(computer_number) is not int or not 0 <= computer_number < number_of_computers:
            raise UsageError(
                f"computer_number must be an int from 0 to {number_of_computers - 1}, but got {computer_number!r}"
            )
        self.computer_number = computer_number
        self.number_of_computers = number_of_computers

    def shard(self, specifications: list[Specification]) -> list[Specification]:
        """Return this computer's share of ``specifications``."""
        return specifications[self.computer_number :: self.number_of_computers]

    def _share(self, specifications: list[Specification]) -> list[Specification]:
        return self.shard(specifications)


def _cross_product(generation_specification: Any) -> list[Specification]:
    if not isinstance(generation_specification, dict):
        raise SpecError(
            f"a generation specification must be a dict, but got {type(generation_specification).__name__} "
            f"{generation_specification!r:.80}"
        )
    for key in generation_specification:
        if not isinstance(key, str):
            raise SpecError(f"generation specification key {key!r} is a {type(key).__name__}; keys must be strings")
    keys = sorted(generation_specification)
    choices = [
        [(key, value) for value in _choices(generation_specification[key])]
        for key in keys
        if _is_choice_list(generation_specification[key])
    ]
    specifications = []
    for updates in itertools.product(*choices):
        specification = {key: copy.deepcopy(generation_specification[key]) for key in keys}
        for key, value in updates:
            specification[key] = copy.deepcopy(value)
        specifications.append(specification)
    return specifications


def _is_choice_list(value: Any) -> bool:
    """Whether ``value`` lists choices: a list, or an array of one or more dimensions (numpy, pandas)."""
    return isinstance(value, list) or (_is_array(value) and value.shape != ())


def _choices(value: Any) -> list[Any]:
    """The choices of a choice list; an array's are its plain values (or rows), as its ``tolist()`` gives them."""
    return cast(list[Any], value.tolist() if _is_array(value) else value)


def _is_array(value: Any) -> bool:
    return isinstance(getattr(value, "shape", None), tuple) and callable(getattr(value, "tolist", None))
