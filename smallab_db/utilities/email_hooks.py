"""smallab 2.x's ``smallab.utilities.email_hooks``: callbacks that email a report, through the SMTP server on
``localhost:port`` (the same mails as :mod:`smallab_db.hooks.email` sends)."""

from __future__ import annotations

from typing import Any

from smallab_db.callbacks import CallbackManager
from smallab_db.experiment import Specification
from smallab_db.hooks import email


class EmailCallback(CallbackManager):
    """Emails ``email_adress`` (2.x's spelling) each completed and failed run, and each batch's end."""

    def __init__(self, email_adress: str, port: int) -> None:
        self.email_address = email_adress
        self.smtp_port = port

    def on_specification_complete(self, specification: Specification, result: Any) -> None:
        email.email_on_specification_complete(self.email_address, "localhost", self.smtp_port)(specification, result)

    def on_specification_failure(self, exception: BaseException, specification: Specification) -> None:
        email.email_on_specification_failure(self.email_address, "localhost", self.smtp_port)(exception, specification)

    def on_batch_complete(self, specifications: list[Specification]) -> None:
        email.email_on_batch_complete(self.email_address, "localhost", self.smtp_port)(specifications)

    def on_batch_failure(self, errors: list[BaseException], specifications: list[Specification]) -> None:
        email.email_on_batch_failure(self.email_address, "localhost", self.smtp_port)(errors, specifications)


class EmailCallbackBatchOnly(EmailCallback):
    """Emails only when a batch completes and when a run fails, as in 2.x."""

    def on_specification_complete(self, specification: Specification, result: Any) -> None:
        return None

    def on_batch_failure(self, errors: list[BaseException], specifications: list[Specification]) -> None:
        return None
