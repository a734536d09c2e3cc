"""smallab 2.x's ``smallab.utilities.hooks``."""

from __future__ import annotations

import traceback


def format_exception(exception: BaseException) -> str:
    """Return an exception with its traceback, as text."""
    return "".join(traceback.format_exception(exception))
