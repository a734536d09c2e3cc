"""Hooks that email a report when a specification or a batch completes or fails (smallab's four helpers)."""

from __future__ import annotations

import json
import smtplib
import traceback
from collections.abc import Callable
from email.message import EmailMessage

from smallab_db.experiment import Result, Specification

DEFAULT_SMTP_HOST = "localhost"
DEFAULT_SMTP_PORT = 25


def email_on_specification_complete(
    address: str, smtp_host: str = DEFAULT_SMTP_HOST, smtp_port: int = DEFAULT_SMTP_PORT
) -> Callable[[Specification, Result], None]:
    """Return an ``on_specification_complete`` hook that emails ``address`` each completed specification."""

    def hook(specification: Specification, _result: Result) -> None:
        _send(address, smtp_host, smtp_port, "smallab-db: specification completed", _describe(specification))

    return hook


def email_on_specification_failure(
    address: str, smtp_host: str = DEFAULT_SMTP_HOST, smtp_port: int = DEFAULT_SMTP_PORT
) -> Callable[[BaseException, Specification], None]:
    """Return an ``on_specification_failure`` hook that emails ``address`` each failure with its exception."""

    def hook(exception: BaseException, specification: Specification) -> None:
        body = f"{_describe(specification)}\n\n{_format_exception(exception)}"
        _send(address, smtp_host, smtp_port, "smallab-db: specification failed", body)

    return hook


def email_on_batch_complete(
    address: str, smtp_host: str = DEFAULT_SMTP_HOST, smtp_port: int = DEFAULT_SMTP_PORT
) -> Callable[[list[Specification]], None]:
    """Return an ``on_batch_complete`` hook that emails ``address`` the completed specifications."""

    def hook(specifications: list[Specification]) -> None:
        body = f"{len(specifications)} specification(s) completed.\n\n" + "\n\n".join(map(_describe, specifications))
        _send(address, smtp_host, smtp_port, "smallab-db: batch completed", body)

    return hook


def email_on_batch_failure(
    address: str, smtp_host: str = DEFAULT_SMTP_HOST, smtp_port: int = DEFAULT_SMTP_PORT
) -> Callable[[list[BaseException], list[Specification]], None]:
    """Return an ``on_batch_failure`` hook that emails ``address`` each failed specification with its exception."""

    def hook(exceptions: list[BaseException], specifications: list[Specification]) -> None:
        parts = [
            f"{_describe(spec)}\n{_format_exception(error)}"
            for error, spec in zip(exceptions, specifications, strict=True)
        ]
        body = f"{len(specifications)} specification(s) failed.\n\n" + "\n\n".join(parts)
        _send(address, smtp_host, smtp_port, "smallab-db: batch failed", body)

    return hook


# smallab's spelling of the batch helper, kept so that a smallab script runs with only its imports changed.
email_on_batch_sucesss = email_on_batch_complete


def _describe(specification: Specification) -> str:
    return "Specification: " + json.dumps(specification, sort_keys=True, indent=1)


def _format_exception(exception: BaseException) -> str:
    return "".join(traceback.format_exception(exception)).rstrip()


def _send(address: str, smtp_host: str, smtp_port: int, subject: str, body: str) -> None:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = address
    message["To"] = address
    message.set_content(body)
    with smtplib.SMTP(smtp_host, smtp_port, timeout=30) as connection:
        connection.send_message(message)
