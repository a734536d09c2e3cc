"""The email hooks of smallab_db.hooks.email, sending to a real local SMTP server (aiosmtpd) from a real runner."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from workloads import FailOnOdd, Square

from smallab_db import ExperimentRunner, RunSummary
from smallab_db.hooks.email import (
    email_on_batch_complete,
    email_on_batch_failure,
    email_on_batch_sucesss,
    email_on_specification_complete,
    email_on_specification_failure,
)

ADDRESS = "researcher@example.org"
BATCH = "emailed"
SPECIFICATIONS = [{"seed": seed, "tag": "email"} for seed in range(5)]  # seeds 1 and 3 fail with FailOnOdd
COMPLETED_SEEDS = [0, 2, 4]
FAILED_SEEDS = [1, 3]
# Failures reach the hooks from the calling process, from threads, and pickled back from worker processes.
PARALLELISMS = [(1, None), (2, "threading"), (2, "loky")]
PARALLELISM_IDS = ["in-process", "threads", "processes"]


@dataclass
class Received:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def body(self) -> str:
        """The decoded text body."""
        return self.message.get_content()


class Collector:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Parse and keep the message, then accept it."""
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    """A running local SMTP server and the messages it has received."""

    host: str
    port: int
    collector: Collector

    @property
    def received(self) -> list[Received]:
        """The messages received so far."""
        return self.collector.received


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1 that collects messages, stopped after the test."""
    collector = Collector()
    controller = Controller(collector, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer(controller.hostname, controller.port, collector)
    finally:
        controller.stop()


@pytest.fixture
def runner(sqlite_path: str) -> Iterator[ExperimentRunner]:
    """A runner on a fresh SQLite file, without the default failure hook that prints to standard error."""
    with ExperimentRunner(sqlite_path) as experiment_runner:
        experiment_runner.on_specification_failure(None)
        yield experiment_runner


def run_failing_batch(runner: ExperimentRunner, num_parallel: int = 1, backend: str | None = None) -> RunSummary:
    """Run SPECIFICATIONS with FailOnOdd and check the split between completed and failed runs."""
    summary = runner.run(
        BATCH, SPECIFICATIONS, FailOnOdd(), num_parallel=num_parallel, show_progress=False, backend=backend
    )
    assert sorted(spec["seed"] for spec in summary.completed) == COMPLETED_SEEDS
    assert sorted(spec["seed"] for spec in summary.failed) == FAILED_SEEDS
    return summary


def mentioned_seeds(body: str) -> list[int]:
    """Return the seeds of the specifications a message body shows, in order."""
    return [int(seed) for seed in re.findall(r'"seed": (\d+)', body)]


def assert_addressed(received: Received, subject: str) -> None:
    """Check that a message goes from and to ADDRESS, in the envelope and the headers, with ``subject``."""
    assert received.mail_from == ADDRESS
    assert received.rcpt_tos == [ADDRESS]
    assert received.message["From"] == ADDRESS
    assert received.message["To"] == ADDRESS
    assert received.message["Subject"] == subject


def test_specification_complete_sends_one_message_per_completed_specification(
    runner: ExperimentRunner, smtp_server: SmtpServer
) -> None:
    """Each completed specification is emailed once; failed ones are not."""
    runner.on_specification_complete(email_on_specification_complete(ADDRESS, smtp_server.host, smtp_server.port))
    run_failing_batch(runner)

    assert len(smtp_server.received) == len(COMPLETED_SEEDS)
    for received in smtp_server.received:
        assert_addressed(received, "smallab-db: specification completed")
        assert '"tag": "email"' in received.body
    assert sorted(seed for received in smtp_server.received for seed in mentioned_seeds(received.body)) == (
        COMPLETED_SEEDS
    )


@pytest.mark.parametrize(("num_parallel", "backend"), PARALLELISMS, ids=PARALLELISM_IDS)
def test_specification_failure_sends_the_exception_and_its_traceback(
    runner: ExperimentRunner, smtp_server: SmtpServer, num_parallel: int, backend: str | None
) -> None:
    """Each failed specification is emailed once with the exception text and the traceback of the failure."""
    runner.on_specification_failure(email_on_specification_failure(ADDRESS, smtp_server.host, smtp_server.port))
    run_failing_batch(runner, num_parallel, backend)

    assert len(smtp_server.received) == len(FAILED_SEEDS)
    by_seed: dict[int, str] = {}
    for received in smtp_server.received:
        assert_addressed(received, "smallab-db: specification failed")
        (seed,) = mentioned_seeds(received.body)
        by_seed[seed] = received.body
    assert sorted(by_seed) == FAILED_SEEDS
    for seed, body in by_seed.items():
        assert f"ValueError: odd seed {seed}" in body
        assert "Traceback (most recent call last)" in body
        assert "workloads.py" in body  # the frame of FailOnOdd.main that raised


def test_batch_complete_sends_one_message_listing_the_completed_specifications(
    runner: ExperimentRunner, smtp_server: SmtpServer
) -> None:
    """The batch hook sends a single message that counts and lists the completed specifications only."""
    runner.on_batch_complete(email_on_batch_complete(ADDRESS, smtp_server.host, smtp_server.port))
    run_failing_batch(runner)

    (received,) = smtp_server.received
    assert_addressed(received, "smallab-db: batch completed")
    assert received.body.startswith(f"{len(COMPLETED_SEEDS)} specification(s) completed.")
    assert sorted(mentioned_seeds(received.body)) == COMPLETED_SEEDS


def test_batch_success_alias_is_the_batch_complete_helper(runner: ExperimentRunner, smtp_server: SmtpServer) -> None:
    """smallab's spelling ``email_on_batch_sucesss`` is the same helper and sends the same report."""
    assert email_on_batch_sucesss is email_on_batch_complete
    runner.on_batch_complete(email_on_batch_sucesss(ADDRESS, smtp_server.host, smtp_server.port))
    summary = runner.run(BATCH, SPECIFICATIONS, Square(), show_progress=False)
    assert len(summary.completed) == len(SPECIFICATIONS)

    (received,) = smtp_server.received
    assert_addressed(received, "smallab-db: batch completed")
    assert received.body.startswith(f"{len(SPECIFICATIONS)} specification(s) completed.")
    assert sorted(mentioned_seeds(received.body)) == [spec["seed"] for spec in SPECIFICATIONS]


@pytest.mark.parametrize(("num_parallel", "backend"), PARALLELISMS, ids=PARALLELISM_IDS)
def test_batch_failure_sends_one_message_with_every_exception(
    runner: ExperimentRunner, smtp_server: SmtpServer, num_parallel: int, backend: str | None
) -> None:
    """The batch failure hook sends a single message with each failed specification, its exception and traceback."""
    runner.on_batch_failure(email_on_batch_failure(ADDRESS, smtp_server.host, smtp_server.port))
    run_failing_batch(runner, num_parallel, backend)

    (received,) = smtp_server.received
    assert_addressed(received, "smallab-db: batch failed")
    assert received.body.startswith(f"{len(FAILED_SEEDS)} specification(s) failed.")
    assert sorted(mentioned_seeds(received.body)) == FAILED_SEEDS
    for seed in FAILED_SEEDS:
        assert f"ValueError: odd seed {seed}" in received.body
    assert received.body.count("Traceback (most recent call last)") == len(FAILED_SEEDS)


def test_batch_failure_sends_nothing_when_nothing_fails(runner: ExperimentRunner, smtp_server: SmtpServer) -> None:
    """A batch without failures does not call the batch failure hook, so no message is sent."""
    runner.on_batch_failure(email_on_batch_failure(ADDRESS, smtp_server.host, smtp_server.port))
    summary = runner.run(BATCH, SPECIFICATIONS, Square(), show_progress=False)

    assert len(summary.completed) == len(SPECIFICATIONS)
    assert smtp_server.received == []


def test_unreachable_smtp_server_is_logged_once_per_hook_and_the_batch_goes_on(
    runner: ExperimentRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing listening on the port every hook raises; each is logged once and every run is still stored."""
    closed_port = free_port()
    runner.on_specification_complete(email_on_specification_complete(ADDRESS, "127.0.0.1", closed_port))
    runner.on_specification_failure(email_on_specification_failure(ADDRESS, "127.0.0.1", closed_port))
    runner.on_batch_complete(email_on_batch_complete(ADDRESS, "127.0.0.1", closed_port))
    runner.on_batch_failure(email_on_batch_failure(ADDRESS, "127.0.0.1", closed_port))

    with caplog.at_level(logging.ERROR, logger="smallab_db"):
        run_failing_batch(runner)

    hook_errors = [record for record in caplog.records if "raised" in record.getMessage()]
    logged_hooks = sorted(str(record.args[0]) for record in hook_errors)  # type: ignore[index]
    assert logged_hooks == sorted(
        f"{helper}.<locals>.hook"
        for helper in (
            "email_on_specification_complete",
            "email_on_specification_failure",
            "email_on_batch_complete",
            "email_on_batch_failure",
        )
    )
    for record in hook_errors:
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], OSError)  # ConnectionRefusedError from smtplib

    stored: dict[str, list[dict[str, Any]]] = {
        status: runner.results(BATCH, status) for status in ("completed", "failed", "pending", "running")
    }
    assert sorted(run["specification"]["seed"] for run in stored["completed"]) == COMPLETED_SEEDS
    assert sorted(run["result"]["seed"] for run in stored["completed"]) == COMPLETED_SEEDS
    assert sorted(run["specification"]["seed"] for run in stored["failed"]) == FAILED_SEEDS
    assert stored["pending"] == stored["running"] == []
