"""Specifications: validation, canonical JSON and the stable hash that identifies a run.

The hash is a stored contract (see "Hash scheme" in docs/database.md): the SHA-256 of the canonical JSON text,
``json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`` encoded as
UTF-8. Changing it needs a migration.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Iterable, Iterator
from typing import Any, cast

from smallab_db.codec import canonical_json, serialize_json
from smallab_db.errors import SpecError
from smallab_db.experiment import Specification

HASH_SCHEME = "sha256-canonical-json-v1"

_SCALARS = (str, int, float, bool, type(None))
# Deeper specifications are refused: JSON encoders and database JSON functions recurse once per level.
MAX_NESTING = 100


def hash_canonical(canonical: str) -> str:
    """Return the hex SHA-256 of a canonical JSON text."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def specification_hash(specification: Specification) -> str:
    """Return the stable hash of a specification, validating it first; a numpy scalar in it hashes as the equal
    plain value (see :func:`plain_specification`).

    Raises:
        SpecError: the specification is not a JSON object that survives a JSON round trip.
    """
    return hash_canonical(canonical_json(plain_specification(specification)))


def validate_specification(specification: Any, position: int | None = None) -> None:
    """Check that ``specification`` is a dict of JSON values that a JSON round trip leaves unchanged.

    Args:
        specification: the candidate specification.
        position: its index in the caller's list, named in the error.

    Raises:
        SpecError: naming the position, the key path and the offending value.
    """
    where = "specification" if position is None else f"specification #{position}"
    if type(specification) is not dict:
        hint = _generator_hint(specification)
        raise SpecError(
            f"{where} must be a dict of JSON values, but got {type(specification).__name__} {specification!r:.80}{hint}"
        )
    problem = _first_problem(specification, "")
    if problem is not None:
        path, message = problem
        raise SpecError(f"{where} is not valid JSON at key path {path or '<root>'}: {message}")


def plain_specification(specification: Any, position: int | None = None) -> Specification:
    """Return ``specification`` validated, with every numpy scalar (any value of shape ``()`` with a ``tolist()``
    method: ``np.int64(3)``, ``np.float32(0.5)``, ``np.bool_(True)``) replaced by the equal plain value, which is
    what is hashed, stored and handed to ``main``. A specification without one is returned as it is.

    Raises:
        SpecError: as :func:`validate_specification`; a numpy array names ``.tolist()`` as the fix.
    """
    if type(specification) is dict:
        if _is_flat_and_plain(specification) or _first_problem(specification, "") is None:
            return cast(Specification, specification)
        specification = _plain(specification)
    validate_specification(specification, position)
    return cast(Specification, specification)


def validate_all(specifications: Any) -> list[Specification]:
    """Validate every specification of a list and return them as a list, numpy scalars made plain (see
    :func:`plain_specification`).

    Raises:
        SpecError: ``specifications`` is not a list or tuple, or one of its items is invalid.
    """
    if isinstance(specifications, (str, bytes, dict)) or not isinstance(specifications, Iterable):
        fix = _generator_hint(specifications) or ": pass a list such as [{'seed': 1}, {'seed': 2}]"
        raise SpecError(f"specifications must be a list of dicts, but got {type(specifications).__name__}{fix}")
    return [plain_specification(specification, position) for position, specification in enumerate(specifications)]


def _generator_hint(value: Any) -> str:
    """The fix for a specification generator (or its ``generate`` method) given where its output belongs."""
    if callable(getattr(value, "generate", None)) or getattr(value, "__name__", None) == "generate":
        return (
            ": this is a specification generator, not its output; pass what it generates, for example "
            "SpecificationGenerator().generate({'seed': [1, 2, 3]})"
        )
    return ""


def _plain(value: Any, depth: int = 0) -> Any:
    """Return a copy of ``value`` with numpy scalars (a ``tolist()`` method and shape ``()``) as plain values, down
    to the deepest nesting a specification may have."""
    kind = type(value)
    if kind in (dict, list) and depth >= MAX_NESTING:
        return value
    if kind is dict:
        return {_plain(key, depth): _plain(item, depth + 1) for key, item in value.items()}
    if kind is list:
        return [_plain(item, depth + 1) for item in value]
    if getattr(value, "shape", None) == () and callable(getattr(value, "tolist", None)):
        return value.tolist()
    return value


def hashed(specifications: Iterable[Specification], keep_key_order: bool = False) -> Iterator[tuple[str, str]]:
    """Yield ``(hash, JSON text)`` of each validated specification, in order: the canonical JSON, or with
    ``keep_key_order`` the JSON with the keys in the order given (smallab 2.x names runs from it)."""
    for specification in specifications:
        canonical = canonical_json(specification)
        yield hash_canonical(canonical), serialize_json(specification) if keep_key_order else canonical


def list_digest(specifications: list[Specification], keep_key_order: bool = False) -> str:
    """Return a digest of a validated list, its order and its keys' order included, for telling that a list is the
    one registered before without hashing each specification. Equal digests mean equal lists; equal lists built
    differently (one dict object listed twice, say) may digest apart, which only costs the shortcut."""
    digest = hashlib.blake2b(digest_size=32)
    digest.update(f"{HASH_SCHEME} keep_key_order={keep_key_order}".encode())
    pickle.Pickler(_Digesting(digest), protocol=5).dump(specifications)  # in frames: the pickle is never whole
    return digest.hexdigest()


class _Digesting:
    """A file that feeds what is written to it to a hash."""

    def __init__(self, digest: hashlib.blake2b) -> None:
        self._digest = digest

    def write(self, data: bytes) -> None:
        self._digest.update(data)


def _is_flat_and_plain(specification: dict[Any, Any]) -> bool:
    """Whether a specification is one that is valid at a glance, the common kind: ASCII keys, and values that are
    ASCII strings, ints, finite floats, booleans or None, none holding NUL. False means look closer."""
    for key, value in specification.items():
        if type(key) is not str or not key.isascii() or "\x00" in key:
            return False
        kind = type(value)
        if kind is str:
            if not value.isascii() or "\x00" in value:
                return False
        elif kind is float:
            if not math.isfinite(value):
                return False
        elif kind is not int and kind is not bool and value is not None:
            return False
    return True


def _first_problem(value: Any, path: str, depth: int = 0) -> tuple[str, str] | None:
    """Return ``(key path, message)`` of the first value a JSON round trip would change or that a database cannot
    store and query, else None."""
    kind = type(value)
    if kind in (dict, list) and depth >= MAX_NESTING:
        return path, f"it is nested more than {MAX_NESTING} levels deep; flatten the specification"
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return path, f"key {key!r} is a {type(key).__name__}; JSON keys must be strings"
            key_problem = _text_problem(key, f"key {key!r:.80}")
            if key_problem is not None:
                return path, key_problem
            problem = _first_problem(item, f"{path}.{key}" if path else key, depth + 1)
            if problem is not None:
                return problem
        return None
    if kind is list:
        for index, item in enumerate(value):
            problem = _first_problem(item, f"{path}[{index}]", depth + 1)
            if problem is not None:
                return problem
        return None
    if kind is float and not math.isfinite(value):
        return path, f"{value!r} is not a finite number; JSON has no NaN or infinity"
    if kind is str:
        text_problem = _text_problem(value, f"{value!r:.80}")
        return None if text_problem is None else (path, text_problem)
    if kind in _SCALARS:
        return None
    hint = " (use a list)" if kind in (tuple, set, frozenset) else ""
    if callable(getattr(value, "tolist", None)):
        hint = " (use .tolist() for its plain value or list)"
    return path, f"{value!r:.80} is a {kind.__name__}, which JSON cannot hold unchanged{hint}"


def _text_problem(text: str, shown: str) -> str | None:
    """Say why a string cannot be stored as it is in a specification, else None."""
    if "\x00" in text:
        return f"{shown} holds a NUL character, which PostgreSQL cannot query in JSON; remove it or encode the bytes"
    if not _is_utf8(text):
        return f"{shown} holds a lone surrogate (an undecodable file name?), which UTF-8 cannot encode"
    return None


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def lists_for_tuples(value: Any) -> Any:
    """Return ``value`` with every tuple inside it, at any depth of dicts and lists, turned into a list.

    smallab 2.x scripts put tuples in specifications; through the 2.x surface they are stored, hashed and handed to
    the experiment as the JSON lists they become.
    """
    if type(value) is dict:
        return {key: lists_for_tuples(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return [lists_for_tuples(item) for item in value]
    return value
