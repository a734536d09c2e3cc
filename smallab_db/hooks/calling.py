"""Calling user hooks so that a hook that raises never stops a batch, and is reported once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("smallab_db")

# A hook failing this many times in a row (an unreachable mail server, say) is not called again in the same run.
MAX_CONSECUTIVE_FAILURES = 3


class HookCaller:
    """Calls hooks; each hook's first error is logged once with its traceback, and a hook that fails
    :data:`MAX_CONSECUTIVE_FAILURES` times in a row is not called again."""

    def __init__(self) -> None:
        self._consecutive_failures: dict[int, int] = {}
        self._failed_hooks: list[Callable[..., Any]] = []  # keeps each failed hook alive, so its id stays its own

    def call(self, hook: Callable[..., Any] | None, *arguments: Any) -> None:
        """Call ``hook(*arguments)`` unless it is None or was given up on; log its first exception and go on."""
        if hook is None:
            return
        key = id(hook)
        failures = self._consecutive_failures.get(key, 0)
        if failures >= MAX_CONSECUTIVE_FAILURES:
            return
        try:
            hook(*arguments)
        except Exception:
            if all(failed is not hook for failed in self._failed_hooks):
                self._failed_hooks.append(hook)
                logger.exception(
                    "smallab-db: hook %s raised; the batch goes on, and after %d failures in a row the hook is not "
                    "called again in this run",
                    getattr(hook, "__qualname__", repr(hook)),
                    MAX_CONSECUTIVE_FAILURES,
                )
            self._consecutive_failures[key] = failures + 1
        else:
            self._consecutive_failures[key] = 0
