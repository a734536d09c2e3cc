"""The one JSON and text codec: canonical specification JSON, the queryable JSON copy of results, and text that
every supported database stores as it is (valid UTF-8, no NUL characters)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from smallab_db.experiment import Result, Specification

# PostgreSQL text cannot hold NUL, and its json operators (->>) fail on a "\u0000" escape; SQLite takes both.
_NUL = "\x00"
_NUL_IN_TEXT = "\\x00"  # how NUL shows in stored error text
_NUL_IN_JSON = "\ufffd"  # what NUL becomes in the queryable JSON copy of a result (the pickle keeps the exact value)


# Encoders built once: ``json.dumps`` with options builds a new encoder on every call.
_encode_stored = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)  # None outside CPython


def _c_encoder(settings: json.JSONEncoder) -> Callable[[Any], str]:
    """``settings.encode``, faster: CPython's C encoder made once (``JSONEncoder.encode`` makes one per call), and
    without the circular-reference check (a circular value raises RecursionError instead of ValueError)."""
    if _make_c_encoder is None:
        return settings.encode
    separators = (settings.key_separator, settings.item_separator)
    chunks = _make_c_encoder(
        None,
        settings.default,
        json.encoder.encode_basestring,  # CPython's C one: ensure_ascii=False
        None,
        *separators,
        settings.sort_keys,
        settings.skipkeys,
        settings.allow_nan,
    )

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


class JSONText(str):
    """JSON text that is already serialised: stored as it is instead of being serialised again."""


# The text a specification's hash is computed from (validated specifications nest at most 100 levels).
_encode_canonical = _c_encoder(
    json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
)


def serialize_json(value: Any) -> str:
    """The engines' JSON serialiser: passes :class:`JSONText` through, serialises anything else."""
    if type(value) is JSONText:
        return value
    return _encode_stored(value)


def canonical_json(specification: Specification) -> str:
    """Return the canonical JSON text of a validated specification: the text its hash is computed from."""
    return _encode_canonical(specification)


def queryable_json(result: Result) -> str | None:
    """Return the result as JSON text that SQLite and PostgreSQL can both store and query, or None when it is not
    JSON (what ``result_json`` stores).

    A value with a ``tolist()`` method (a numpy scalar or array, a pandas Series) is stored as what that returns,
    plain numbers and lists. NUL characters in strings become U+FFFD in this copy; a lone surrogate, NaN, infinity,
    a non-string key or a value JSON has no form for makes the result not JSON.
    """
    try:
        text = _encode_queryable(result)
        if not text.isascii():
            text.encode("utf-8")  # a lone surrogate serialises, but no database can store it
        if "\\u0000" in text:
            text = _encode_stored(_without_nul(json.loads(text)))
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    return text


def _as_list_or_number(value: Any) -> Any:
    """JSON's fallback for a value it has no form for: what its ``tolist()`` returns, if it has one."""
    to_list = getattr(value, "tolist", None)
    if not callable(to_list):
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    try:
        return to_list()
    except Exception as error:  # the value's own method failed: the result is not JSON
        raise TypeError(f"{type(value).__name__}.tolist() failed: {error}") from error


_encode_queryable = _c_encoder(json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_as_list_or_number))


def storable_text(text: str) -> str:
    """Return ``text`` in a form every database stores unchanged: NUL shown as ``\\x00``, lone surrogates (an
    undecodable file name, say) as ``\\udcxx`` escapes."""
    if _NUL in text:
        text = text.replace(_NUL, _NUL_IN_TEXT)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _without_nul(value: Any) -> Any:
    """Return a copy of a JSON value whose strings (keys too) have NUL replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace(_NUL, _NUL_IN_JSON)
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value
