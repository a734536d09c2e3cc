"""Calling user hooks so that a hook that raises never stops a batch, and is reported once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("smallab_db")


class HookCaller:
    """Calls hooks; the first error of each hook is logged with its traceback, later ones are counted."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}

    def call(self, hook: Callable[..., Any] | None, *arguments: Any) -> None:
        """Call ``hook(*arguments)`` unless it is None; log its first exception and go on."""
        if hook is None:
            return
        try:
            hook(*arguments)
        except Exception:
            name = getattr(hook, "__qualname__", repr(hook))
            self.errors[name] = self.errors.get(name, 0) + 1
            if self.errors[name] == 1:
                logger.exception("smallab-db: hook %s raised; the batch goes on, later errors are only counted", name)
