"""smallab 2.x's ``smallab.utilities.logging_callback``."""

from __future__ import annotations

import logging
import pprint
from typing import Any

from smallab_db.callbacks import CallbackManager
from smallab_db.experiment import Specification
from smallab_db.utilities.hooks import format_exception


class LoggingCallback(CallbackManager):
    """Logs each completed run (INFO) and failed run (ERROR) to the root logger."""

    def on_specification_complete(self, specification: Specification, result: Any) -> None:
        logging.info("specification completed: %s\nresult: %s", pprint.pformat(specification), pprint.pformat(result))

    def on_specification_failure(self, exception: BaseException, specification: Specification) -> None:
        logging.error("specification failed: %s\n%s", pprint.pformat(specification), format_exception(exception))
