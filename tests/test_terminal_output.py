"""What a user sees in a terminal while a batch runs, read from a real terminal (tmux, see tests/terminal.py): hook
output and failures on lines of their own above the progress bar, a re-run with nothing to do, Ctrl-C; and the
error for a generator passed where its output belongs."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from terminal import Terminal, terminal

from smallab_db import ExperimentRunner, MultiComputerGenerator, SpecError, SpecificationGenerator

EXPERIMENT = """
import sys, time
from smallab_db import ExperimentRunner

def main(specification):
    time.sleep(float(sys.argv[3]))
    if specification["seed"] % 3 == 0:
        raise ValueError(f"seed {specification['seed']} fails on purpose")
    return {"seed": specification["seed"]}

runner = ExperimentRunner(sys.argv[1])
if sys.argv[2] == "printing-hooks":
    runner.on_specification_complete(lambda specification, result: print("completed seed", result["seed"]))
    runner.on_specification_failure(lambda error, specification: print("failed seed", specification["seed"]))
runner.run("batch", [{"seed": seed} for seed in range(int(sys.argv[4]))], main)
"""
BAR = re.compile(r"^batch: +\d+%\|.*\| (\d+)/(\d+) \[")


def run_experiment(screen: Terminal, folder: Path, hooks: str, sleep: float = 0.1, count: int = 8) -> list[str]:
    """Run :data:`EXPERIMENT` in the terminal on ``folder/runs.db``; return the lines on the screen."""
    script = folder / "experiment.py"
    script.write_text(EXPERIMENT)
    return screen.run(f"{sys.executable} {script} runs.db {hooks} {sleep} {count}", cwd=folder)


def test_what_hooks_print_comes_out_above_the_progress_bar(tmp_path: Path) -> None:
    """Hooks that ``print``, as smallab users write them: each message is a line of its own, none is written into
    the bar's line, and the finished bar is the last line."""
    with terminal() as screen:
        lines = run_experiment(screen, tmp_path, "printing-hooks")

    messages = [line for line in lines if not BAR.match(line)]
    assert sorted(messages) == sorted(
        [f"failed seed {seed}" for seed in (0, 3, 6)] + [f"completed seed {seed}" for seed in (1, 2, 4, 5, 7)]
    ), lines
    assert BAR.match(lines[-1]) and "8/8" in lines[-1] and "completed=5 failed=3" in lines[-1], lines


def test_the_default_failure_messages_come_out_above_the_progress_bar(tmp_path: Path) -> None:
    """The default failure hook's message for each failure is a whole line of its own, above the bar."""
    with terminal() as screen:
        lines = run_experiment(screen, tmp_path, "default-hooks")

    failures = [line for line in lines if not BAR.match(line)]
    assert [line.split(" failed with ")[0] for line in failures] == [
        f'smallab-db: specification {{"seed": {seed}}}' for seed in (0, 3, 6)
    ], lines
    assert all(line.endswith("fails on purpose (full traceback stored in the database)") for line in failures)
    assert BAR.match(lines[-1]) and "8/8" in lines[-1], lines


def test_a_rerun_with_nothing_to_do_says_every_run_is_completed(tmp_path: Path) -> None:
    """Running a finished batch again says that all its runs are already completed, instead of an empty bar."""
    with ExperimentRunner(tmp_path / "runs.db") as runner:
        runner.run("batch", [{"seed": seed} for seed in (1, 2, 4, 5, 7)], dict, show_progress=False)
    script = tmp_path / "again.py"
    script.write_text(
        "from smallab_db import ExperimentRunner\n"
        "ExperimentRunner('runs.db').run('batch', [{'seed': seed} for seed in (1, 2, 4, 5, 7)], dict)\n"
    )
    with terminal() as screen:
        lines = screen.run(f"{sys.executable} {script}", cwd=tmp_path)

    assert lines == [
        "batch: all 5 runs are already completed, nothing to run (continue_from_last_run=False runs them again)"
    ]


def wait_for(screen: Terminal, session: str, text: str) -> str:
    """Wait until ``text`` is on the screen of ``session`` (its history included); return the screen."""
    deadline = time.monotonic() + 60
    while text not in (shown := screen.tmux("capture-pane", "-p", "-J", "-t", session, "-S", "-")):
        assert time.monotonic() < deadline, f"{text!r} never came:\n{shown}"
        time.sleep(0.1)
    return shown


def test_ctrl_c_says_on_a_line_of_its_own_that_the_same_call_resumes(tmp_path: Path) -> None:
    """Ctrl-C typed in the terminal: the message says what is stored and that running the same call again resumes,
    on a line of its own."""
    script = tmp_path / "experiment.py"
    script.write_text(EXPERIMENT)
    command = f"cd {tmp_path} && {sys.executable} {script} runs.db printing-hooks 0.2 100; sleep 600"
    with terminal() as screen:
        screen.tmux("new-session", "-d", "-s", "interrupted", "-x", "160", "-y", "60", command)
        # Python dies of the SIGINT it re-raises, and the shell may end with it: the pane must stay to be read.
        screen.tmux("set-option", "-t", "interrupted", "remain-on-exit", "on")
        wait_for(screen, "interrupted", "completed seed 2")
        screen.tmux("send-keys", "-t", "interrupted", "C-c")
        wait_for(screen, "interrupted", "KeyboardInterrupt")
        # Lines as the screen shows them: the terminal's own echo of Ctrl-C ("^C") may wrap past the bar's line.
        shown = screen.tmux("capture-pane", "-p", "-t", "interrupted", "-S", "-")

    (message,) = [line for line in shown.splitlines() if "interrupted;" in line]
    assert re.fullmatch(
        r"smallab-db: interrupted; \d+ completed and \d+ failed runs are stored, unfinished runs are pending again: "
        r"run the same call again to resume",
        message.rstrip(),
    ), shown


@pytest.mark.parametrize(
    "given",
    [SpecificationGenerator(), SpecificationGenerator().generate, MultiComputerGenerator(0, 2)],
    ids=["generator", "generate-method", "multi-computer-generator"],
)
def test_passing_the_generator_instead_of_its_output_names_generate(sqlite_path: str, given: object) -> None:
    """``run(name, SpecificationGenerator(), …)`` (or its ``generate`` method) is a SpecError that shows the call
    giving the specifications, and nothing is stored."""
    with ExperimentRunner(sqlite_path) as runner:
        with pytest.raises(SpecError) as raised:
            runner.run("batch", given, dict, show_progress=False)  # type: ignore[arg-type]
        assert runner.store.batch_counts() == []
    message = str(raised.value)
    assert "not its output" in message and ".generate({'seed': [1, 2, 3]})" in message
