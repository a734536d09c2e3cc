"""Every run keeps what it writes to standard output and error and logs, in ``runs.output`` and the view
``run_details``: in the calling process, in threads (each run its own), in worker processes; capped at 1 MB saying
so; kept by failed runs; with no file handle left open; printed by ``smallab-db logs``, which ``--follow`` streams
while the run goes on. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import processes
import pytest
from click.testing import CliRunner
from output_workloads import expected_talk, outputs, print_then_die, shout, talk, talked, without_log_format
from workloads import Square

from smallab_db import ExperimentRunner, specification_hash
from smallab_db.cli import main
from smallab_db.experiment_types.experiment import Experiment as Smallab2Experiment
from smallab_db.run_output import MAX_OUTPUT_CHARACTERS, OutputTail, keeping_output, split_dropped
from smallab_db.runner_implementations.main_process_runner import MainRunner

SCRIPT = Path(sys.executable).parent / "smallab-db"
TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    ("num_parallel", "backend"), [(1, None), (2, "loky"), (4, "threading")], ids=["serial", "processes", "threads"]
)
def test_stdout_stderr_and_logging_are_kept_with_each_run(
    database_url: str, num_parallel: int, backend: str | None
) -> None:
    """Runs interleave their lines (they pause between them); each keeps its own, failed ones too."""
    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    specifications = [{"seed": seed, "pause": 0.01, "fail": seed == 2} for seed in range(6)]
    runner.run("talk", specifications, talk, num_parallel=num_parallel, backend=backend, show_progress=False)
    talked(runner, "talk", specifications)
    runner.close()


TEE = """
import logging
import sys
from output_workloads import talk
from smallab_db import ExperimentRunner
with ExperimentRunner(sys.argv[1]) as runner:
    runner.run("tee", [{"seed": 7}], talk, show_progress=False)
assert logging.root.handlers == [], "a handler was added: logging.basicConfig() would do nothing"
"""


def test_a_run_whose_worker_died_keeps_what_it_wrote_while_it_ran(database_url: str) -> None:
    """The worker dies (twice: the run is tried again alone) only once the run's output was written while it ran:
    the failed run keeps it."""
    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    summary = runner.run(
        "dies", [{"seed": 1, "database": database_url}], print_then_die, num_parallel=2, show_progress=False
    )
    assert [type(error).__name__ for error in summary.exceptions] == ["WorkerDiedError"]
    assert list(outputs(runner, "dies").values()) == [("failed", "about to die\n")]
    runner.close()


def test_what_runs_write_still_reaches_the_terminal(sqlite_path: str) -> None:
    """The streams are teed: in a process without logging handlers, standard output and error show what they
    showed before (a warning as its message alone), once, and the run keeps the same; no handler was added."""
    environment = {**os.environ, "PYTHONPATH": str(TESTS)}
    process = processes.run([sys.executable, "-c", TEE, sqlite_path], timeout=120, env=environment, text=True)
    assert process.returncode == 0, process.stderr
    assert process.stdout == "".join(f"out 7.{line}\n" for line in range(5))
    assert process.stderr == "".join(f"err 7.{line}\nlog 7.{line}\n" for line in range(5))
    with ExperimentRunner(sqlite_path) as runner:
        assert outputs(runner, "tee") == {specification_hash({"seed": 7}): ("completed", expected_talk(7))}


def test_a_record_a_handler_prints_is_kept_once(sqlite_path: str) -> None:
    """A handler that prints on standard error (made during the run, so on the routed stream) and one that prints
    elsewhere: each record is kept once, in the format of the handler that printed it on the run's stream, or in
    smallab-db's own format."""
    logger = logging.getLogger("handled")
    elsewhere = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  (closed below)
    logger.addHandler(elsewhere)
    logger.propagate = False

    def log_twice(specification: dict[str, Any]) -> dict[str, Any]:
        logger.warning("to elsewhere only")
        printing = logging.StreamHandler(sys.stderr)
        printing.setFormatter(logging.Formatter("printed: %(message)s"))
        logger.addHandler(printing)
        try:
            logger.warning("to standard error")
        finally:
            logger.removeHandler(printing)
        return {}

    try:
        with ExperimentRunner(sqlite_path) as runner:
            runner.run("handled", [{"seed": 1}], log_twice, show_progress=False)
            ((_, output),) = outputs(runner, "handled").values()
    finally:
        logger.removeHandler(elsewhere)
        elsewhere.stream.close()
        logger.propagate = True
    first, second = (output or "").splitlines()
    assert first.endswith(" - handled - WARNING - to elsewhere only")
    assert second == "printed: to standard error"


def test_a_run_keeps_its_newest_megabyte_and_says_how_much_was_cut(database_url: str) -> None:
    runner = ExperimentRunner(database_url)
    specifications = [{"seed": 1, "characters": 1_200_000}, {"seed": 2, "characters": 300}]
    runner.run("shout", specifications, shout, show_progress=False)
    stored = outputs(runner, "shout")
    _, long = stored[specification_hash(specifications[0])]
    _, short = stored[specification_hash(specifications[1])]
    assert long is not None and long.startswith(
        f"[smallab-db: the first 200000 characters of this run's output were dropped; the last "
        f"{MAX_OUTPUT_CHARACTERS} are kept]\n"
    )
    dropped, kept = split_dropped(long)
    assert (dropped, len(kept)) == (200_000, MAX_OUTPUT_CHARACTERS)
    assert kept.startswith(f"{2000:099d}\n") and kept.endswith(f"{11_999:099d}\n")
    assert short == "".join(f"{line:099d}\n" for line in range(3)) and split_dropped(short) == (0, short)
    runner.close()


class Logging2x(Smallab2Experiment):
    """A smallab 2.x experiment that logs to its logger and prints."""

    def main(self, specification: dict[str, Any]) -> dict[str, Any]:
        logging.getLogger(self.get_logger_name()).info("2.x %s", specification["seed"])
        print("printed", specification["seed"])
        return {}


def open_files(folder: Path) -> tuple[list[str], int]:
    """What this process's file descriptors point at, but for the database's files (its connection pool may open
    another connection when threads happen to read at once), and how many of those there are in ``folder`` (runners
    that other tests of this process left open count in neither)."""
    others, database_files = [], 0
    for descriptor in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue  # the descriptor of the listing itself, closed meanwhile
        if target.endswith(("runs.db", "runs.db-wal", "runs.db-shm")):
            database_files += target.startswith(f"{folder}/")
        else:
            others.append(target)
    return sorted(others), database_files


def test_no_file_handle_stays_open_after_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 runs that print and log (plain and smallab 2.x ones, which write log files) leave the process with the
    files it had open after the first batches."""
    monkeypatch.chdir(tmp_path)
    runner = ExperimentRunner(tmp_path / "runs.db")
    runner.run("warm", [{"seed": 0}], talk, show_progress=False)
    runner.run("warm-2x", [{"seed": 0}], Logging2x(), specification_runner=MainRunner(False))
    before, _ = open_files(tmp_path)
    runner.run("many", [{"seed": seed} for seed in range(100)], talk, show_progress=False)
    runner.run("many-2x", [{"seed": seed} for seed in range(100)], Logging2x(), specification_runner=MainRunner(False))
    after, database_files = open_files(tmp_path)
    assert after == before
    assert database_files < 3 * 20, "connections were left open run after run"  # 20: a pool's most, 3 files each
    _, output = outputs(runner, "many-2x")[specification_hash({"seed": 5})]
    assert output is not None and output.endswith(" - INFO - 2.x 5\nprinted 5\n")
    runner.close()


def test_threads_outside_a_run_write_only_to_the_stream(capsys: pytest.CaptureFixture[str]) -> None:
    """A thread's context decides: while a run goes on in this thread, another thread's lines are not its."""
    tail = OutputTail()
    with keeping_output(tail):
        print("mine")
        import threading

        other = threading.Thread(target=print, args=("not mine",))
        other.start()
        other.join()
    assert tail.text() == "mine\n"
    assert capsys.readouterr().out == "mine\nnot mine\n"


def cli(*arguments: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(arguments))
    return result.exit_code, result.stdout, result.stderr


def test_logs_prints_a_runs_output(database_url: str) -> None:
    runner = ExperimentRunner(database_url)
    runner.on_specification_failure(None)
    runner.run("talk", [{"seed": 1}, {"seed": 2, "fail": True}], talk, show_progress=False)
    runner.run("quiet", [{"seed": 1}], Square(), show_progress=False)
    failed = specification_hash({"seed": 2, "fail": True})
    status, stdout, stderr = cli("logs", database_url, failed[:8])
    assert (status, without_log_format(stdout), stderr) == (0, expected_talk(2), "")

    status, stdout, stderr = cli("logs", database_url, specification_hash({"seed": 1})[:8], "--batch", "quiet")
    assert (status, stdout) == (0, "") and "has no output stored" in stderr

    status, stdout, stderr = cli("logs", database_url, specification_hash({"seed": 1})[:8])  # in both batches
    assert (status, stdout) == (1, "") and "matches several runs" in stderr and "--batch NAME" in stderr
    status, stdout, stderr = cli("logs", database_url, "ffffffffff")
    assert (status, stdout) == (1, "") and "no run has a hash starting with 'ffffffffff'" in stderr
    runner.close()


@pytest.mark.parametrize("parallel", ["1", "2"], ids=["in-the-runner", "in-a-worker-process"])
def test_logs_follow_streams_a_running_runs_output_until_it_ends(
    database_url: str, tmp_path: Path, parallel: str
) -> None:
    """A runner process runs an experiment that prints, waits for a file, prints again: ``logs --follow`` shows the
    first line while the run waits (so it was stored while running, by the runner's process or by its worker's),
    then the second, and ends with the run."""
    go = tmp_path / "go"
    specification = {"go": str(go)}
    (tmp_path / "specs.json").write_text(f'[{{"go": "{go}"}}]')
    environment = {**os.environ, "PYTHONPATH": str(TESTS)}
    run_line = ["run", database_url, "--batch", "wait", "--experiment", "output_workloads:print_wait_print"]
    runner = processes.spawn(
        [str(SCRIPT), *run_line, "--specs", "specs.json", "--parallel", parallel, "--no-progress"],
        cwd=tmp_path,
        env=environment,
    )
    prefix = specification_hash(specification)[:10]
    followed = tmp_path / "followed.txt"
    with followed.open("w") as out, (tmp_path / "follow-errors.txt").open("w") as errors:
        follower = None
        deadline = time.monotonic() + 60
        while follower is None and time.monotonic() < deadline:  # until the run is registered
            attempt = processes.run([str(SCRIPT), "runs", database_url, "--batch", "wait"], timeout=60)
            if prefix[:6].encode() in attempt.stdout:
                follower = processes.spawn([str(SCRIPT), "logs", database_url, prefix, "-f"], stdout=out, stderr=errors)
            else:
                time.sleep(0.2)
        assert follower is not None, "the run was never registered"
        while followed.read_text() != "first\n" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert followed.read_text() == "first\n", "the first line was not shown while the run went on"
        assert follower.poll() is None and runner.poll() is None
        go.touch()
        assert follower.wait(timeout=60) == 0
    assert runner.wait(timeout=60) == 0
    assert followed.read_text() == "first\nsecond\n"
    assert (tmp_path / "follow-errors.txt").read_text().endswith("completed\n")
