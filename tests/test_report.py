"""``smallab-db report`` writes one self-contained HTML file which headless Chromium renders offline, with no
console error, each plot holding the points the database says it should, and a screenshot that is not blank.
SQLite and PostgreSQL."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import processes
import pytest
import sqlalchemy as sa
from browser import render
from click.testing import CliRunner
from runner_processes import rows
from workloads import FailOnOdd, Square

from smallab_db import Experiment, ExperimentRunner
from smallab_db.cli import main
from smallab_db.liveness import SIMULATED_HOST_ENV
from smallab_db.report_data import MAX_TABLE_ROWS
from smallab_db.schema import runs

HOSTS = ("node-a", "node-b")
RATES, WIDTHS, SEEDS = (0.01, 0.1, 0.5), (16, 64), range(4)
RESULT_FIELDS, VARYING_KEYS = ("accuracy", "loss"), ("rate", "seed", "width")


class Training(Experiment):
    """A pretend training run: two numeric result fields (and one text field); some runs fail, two ways."""

    def main(self, specification: dict[str, object]) -> dict[str, object]:
        rate, width, seed = specification["rate"], specification["width"], specification["seed"]
        assert isinstance(rate, float) and isinstance(width, int) and isinstance(seed, int)
        if rate == 0.5 and seed == 3:
            raise FloatingPointError("the loss became NaN")
        if width == 64 and seed == 0:
            raise MemoryError("out of memory on the pretend GPU")
        return {"accuracy": 0.5 + rate / 2 + width / 1000 + seed / 100, "loss": 1 / width + seed, "note": "ok"}


def build(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch ``sweep``: half its runs run by host node-a, the rest by node-b; 24 runs, 9 of them failing."""
    specifications = [
        {"rate": rate, "width": width, "seed": seed, "optimizer": "adam"}
        for rate in RATES
        for width in WIDTHS
        for seed in SEEDS
    ]
    with ExperimentRunner(database) as runner:
        runner.on_specification_failure(None)
        for host, chosen in zip(HOSTS, (specifications[::2], specifications), strict=True):
            monkeypatch.setenv(SIMULATED_HOST_ENV, host)
            runner.run("sweep", chosen, Training(), show_progress=False)


def plots(dom: str) -> dict[str, str]:
    """Each Plotly plot of the rendered page by its title (the first two have none: timeline, durations)."""
    found = {}
    for index, part in enumerate(dom.split('class="plot-container plotly"')[1:]):
        title = re.search(r'class="gtitle"[^>]*>([^<]*)<', part)
        found[title.group(1) if title else f"untitled-{index}"] = part
    return found


def test_the_report_renders_offline_with_every_plot_holding_its_points(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page, opened with every network request failing, runs without a console message, draws the timeline (one
    trace per host, two points per finished run), the durations, and one plot per numeric result field and varying
    key (a point per value of the key); lists each error type with its count and a traceback, and every run in the
    table; and its screenshot has many colours."""
    build(database_url, monkeypatch)
    output = tmp_path / "report.html"

    result = CliRunner().invoke(main, ["report", database_url, "--batch", "sweep", "-o", str(output)])

    assert result.exit_code == 0, result.output
    text = output.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link)[^>]+(src|href)=", text), "the page loads a script or style from elsewhere"
    rendered = render(output, tmp_path)
    assert rendered.console == []
    stored = rows(database_url, sa.select(runs.c.status, runs.c.host, runs.c.error_type))
    finished = [row for row in stored if row.status in ("completed", "failed")]
    drawn = plots(rendered.dom)
    expected_titles = {f"{field} by {key}" for field in RESULT_FIELDS for key in VARYING_KEYS}
    assert set(drawn) == {"untitled-0", "untitled-1", *expected_titles}
    timeline = drawn["untitled-0"]
    assert timeline.count('class="trace ') == len({row.host for row in finished}) == len(HOSTS)
    assert timeline.count('class="point"') == 2 * len(finished)
    assert drawn["untitled-1"].count('class="point"') >= 1  # the duration bars
    values = {"rate": len(RATES), "seed": len(SEEDS), "width": len(WIDTHS)}
    for title in expected_titles:
        assert drawn[title].count('class="point"') == values[title.split(" by ")[1]], title
    for error_type in ("FloatingPointError", "MemoryError"):
        count = sum(row.error_type == error_type for row in stored)
        assert f"<h3>{error_type}: {count} run(s)</h3>" in rendered.dom
    assert rendered.dom.count("Traceback (most recent call last)") == 2
    table = rendered.dom.split('class="sortable"')[1]
    assert table.count("<tr>") == 1 + len(stored)
    assert distinct_colours(rendered.screenshot) >= 10


def distinct_colours(screenshot: Path) -> int:
    """How many colours the PNG holds."""
    from PIL import Image

    with Image.open(screenshot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    return len(colours or [])


def test_the_browser_check_sees_console_errors(tmp_path: Path) -> None:
    """The check above would see a failing script: an uncaught error and ``console.error`` are both collected."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('said'); no_such_function();</script></body></html>")
    rendered = render(page, tmp_path, height=200)
    assert any("said" in line for line in rendered.console)
    assert any("no_such_function is not defined" in line for line in rendered.console)


def report_of(database: str, batch: str, output: Path) -> str:
    """Write the report on ``batch`` to ``output`` with the command; return its text."""
    result = CliRunner().invoke(main, ["report", database, "--batch", batch, "-o", str(output)])
    assert result.exit_code == 0, result.output
    return output.read_text(encoding="utf-8")


def table_column(dom: str, column: int) -> list[str]:
    """The cells of one column of the rendered page's sortable table, top to bottom."""
    body = dom.split('class="sortable"')[1].split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<td>([^<]*)</td>", row)[column] for row in body.split("<tr>")[1:]]


@pytest.mark.parametrize("clicks", [1, 2])
def test_clicking_a_column_heading_sorts_the_table(tmp_path: Path, sqlite_path: str, clicks: int) -> None:
    """In Chromium, a click on the heading of the column ``seed`` sorts the runs by it numerically (10 after 9), a
    second click the other way; a click on ``hash`` sorts the hashes as text."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("sweep", [{"seed": seed, "x": 1 + seed % 2} for seed in range(12)], Square(), show_progress=False)
    text = report_of(sqlite_path, "sweep", tmp_path / "report.html")
    headings = re.findall(r"<th>([^<]*)</th>", text.split('class="sortable"')[1])
    seed, hash_column = headings.index("seed"), headings.index("hash")
    clicking = "".join(
        f'document.querySelectorAll("table.sortable th")[{column}].click();' for column in [seed] * clicks
    )
    page = tmp_path / "clicked.html"
    page.write_text(text.replace("</body>", f"<script>{clicking}</script></body>"), encoding="utf-8")
    by_hash = tmp_path / "by-hash.html"
    hash_click = f'document.querySelectorAll("table.sortable th")[{hash_column}].click();'
    by_hash.write_text(text.replace("</body>", f"<script>{hash_click}</script></body>"), encoding="utf-8")

    seeds = [int(cell) for cell in table_column(render(page, tmp_path, height=400).dom, seed)]
    hashes = table_column(render(by_hash, tmp_path, height=400).dom, hash_column)

    assert seeds == (list(range(12)) if clicks == 1 else list(reversed(range(12))))
    assert hashes == sorted(hashes) and len(hashes) == 12


def test_a_batch_with_nothing_finished_renders_without_errors(tmp_path: Path, sqlite_path: str) -> None:
    """A batch whose runs are all pending again (after ``retry``) gets a report saying that nothing finished, which
    renders with no console message."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.on_specification_failure(None)
        runner.run("odd", [{"seed": seed} for seed in (1, 3)], FailOnOdd(), show_progress=False)
    assert CliRunner().invoke(main, ["retry", sqlite_path, "--batch", "odd"]).exit_code == 0
    text = report_of(sqlite_path, "odd", tmp_path / "report.html")

    rendered = render(tmp_path / "report.html", tmp_path, height=600)

    assert rendered.console == [] and plots(rendered.dom) == {}
    assert text.count("<p>No run has finished yet.</p>") == 2 and "<tr><td>pending</td><td>2</td></tr>" in text


def test_the_table_lists_the_first_runs_of_a_big_batch(tmp_path: Path, sqlite_path: str) -> None:
    """Of a batch with more runs than the table's cap, the table lists the first ones and says how many there are;
    the counts cover every run."""
    count = MAX_TABLE_ROWS + 50
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("big", [{"seed": seed} for seed in range(count)], Square(), show_progress=False)

    text = report_of(sqlite_path, "big", tmp_path / "report.html")

    assert text.split('class="sortable"')[1].count("<tr>") == 1 + MAX_TABLE_ROWS
    assert f"the first {MAX_TABLE_ROWS:,} of {count:,}" in text
    assert f"<tr><td>completed</td><td>{count}</td></tr>" in text


WITHOUT_PLOTLY = """
import sys
sys.modules["plotly"] = None  # as if plotly were not installed: importing it raises ImportError
from click.testing import CliRunner
from smallab_db.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
print(result.exit_code, result.stderr.strip())
"""


def test_without_plotly_the_report_names_the_extra_and_writes_nothing(tmp_path: Path, sqlite_path: str) -> None:
    """Without plotly, one ``Error:`` line names ``pip install 'smallab-db[report]'``, and no file is written."""
    with ExperimentRunner(sqlite_path) as runner:
        runner.run("sweep", [{"seed": 1}], Square(), show_progress=False)
    output = tmp_path / "report.html"
    line = ["report", sqlite_path, "--batch", "sweep", "-o", str(output)]

    process = processes.run([sys.executable, "-c", WITHOUT_PLOTLY, *line], text=True, timeout=120)

    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith("1 Error: ") and process.stdout.count("\n") == 1, process.stdout
    assert "pip install 'smallab-db[report]'" in process.stdout
    assert not output.exists()
