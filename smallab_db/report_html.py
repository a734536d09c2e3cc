"""The HTML of ``smallab-db report``: one self-contained page, plotly.js inline, that works offline.

Plotly is an optional dependency (``pip install 'smallab-db[report]'``), imported only here and only when a report
is made.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from importlib import import_module
from types import ModuleType
from typing import Any

from smallab_db.errors import MissingDependencyError
from smallab_db.records import utc_now
from smallab_db.report_data import (
    DURATION_BINS_PER_DECADE,
    MAX_KEY_VALUES,
    MAX_RESULT_FIELDS,
    MAX_TABLE_ROWS,
    MAX_TIMELINE_RUNS,
    ReportData,
)
from smallab_db.schema import STATUSES

MAX_RESULT_PLOTS = 60  # plots of a result field against a specification key, in field order

SORTING = """
document.querySelectorAll("table.sortable th").forEach((header, column) => {
  header.addEventListener("click", () => {
    const body = header.closest("table").tBodies[0];
    const rows = Array.from(body.rows);
    const ascending = header.dataset.order !== "ascending";
    header.dataset.order = ascending ? "ascending" : "descending";
    const key = (row) => row.cells[column].textContent;
    rows.sort((a, b) => {
      const x = key(a), y = key(b), numbers = x !== "" && y !== "" && !isNaN(x) && !isNaN(y);
      const order = numbers ? Number(x) - Number(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    body.append(...rows);
  });
});
"""
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
table.sortable th { cursor: pointer; background: #eef; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.note { color: #666; font-size: 0.9em; }
.plots { display: flex; flex-wrap: wrap; }
.plots > div { width: 48em; }
"""


def plotly() -> ModuleType:
    """Import plotly's graph objects.

    Raises:
        MissingDependencyError: plotly is not installed, naming the extra that installs it.
    """
    try:
        return import_module("plotly.graph_objects")
    except ImportError as error:
        raise MissingDependencyError(
            "smallab-db report draws its plots with plotly, which is not installed: pip install 'smallab-db[report]'"
        ) from error


def page(data: ReportData) -> str:
    """Return the whole HTML page of the report on ``data``."""
    go = plotly()
    from plotly.io import to_html
    from plotly.offline import get_plotlyjs

    figures = [_timeline(go, data), _durations(go, data), *_result_plots(go, data)]
    plots = [to_html(figure, full_html=False, include_plotlyjs=False) for figure in figures if figure is not None]
    batch = html.escape(data.batch)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>smallab-db report: {batch}</title>",
            f"<style>{STYLE}</style>",
            f"<script>{get_plotlyjs()}</script>",
            "</head><body>",
            f"<h1>Batch {batch}</h1>",
            f'<p class="note">{data.total} runs, read {utc_now():%Y-%m-%d %H:%M:%S} UTC by smallab-db report.</p>',
            "<h2>Status</h2>",
            _status_table(data),
            "<h2>Timeline</h2>",
            f'<p class="note">Each finished run from start to end, by host (the last {MAX_TIMELINE_RUNS:,}).</p>',
            plots.pop(0) if data.timeline else "<p>No run has finished yet.</p>",
            "<h2>Durations</h2>",
            plots.pop(0) if data.duration_bins else "<p>No run has finished yet.</p>",
            "<h2>Results by specification key</h2>",
            _results_note(data, len(plots)),
            f'<div class="plots">{"".join(plots)}</div>',
            "<h2>Failures by error type</h2>",
            _failures(data),
            "<h2>Runs</h2>",
            _runs_table(data),
            f"<script>{SORTING}</script>",
            "</body></html>",
        ]
    )


def _timeline(go: ModuleType, data: ReportData) -> Any:
    if not data.timeline:
        return None
    ordered = sorted(data.timeline, key=lambda run: run.started_at)
    figure = go.Figure()
    for host in sorted({run.host for run in ordered}):
        x: list[datetime | None] = []
        y: list[int | None] = []
        for position, run in enumerate(ordered):
            if run.host == host:
                x += [run.started_at, run.finished_at, None]
                y += [position, position, None]
        figure.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=host, line={"width": 4}))
    figure.update_layout(xaxis_title="time (UTC)", yaxis_title="run, in order of start", legend_title="host")
    return figure


def _durations(go: ModuleType, data: ReportData) -> Any:
    if not data.duration_bins:
        return None
    first, last = min(data.duration_bins), max(data.duration_bins)
    edges = [10 ** (index / DURATION_BINS_PER_DECADE) for index in range(first, last + 2)]
    labels = [f"{low:.3g}–{high:.3g}" for low, high in zip(edges, edges[1:], strict=False)]
    counts = [data.duration_bins.get(index, 0) for index in range(first, last + 1)]
    figure = go.Figure(go.Bar(x=labels, y=counts))
    figure.update_layout(xaxis_title="duration (seconds, finished runs)", yaxis_title="runs")
    return figure


def _result_plots(go: ModuleType, data: ReportData) -> list[Any]:
    """For each numeric result field and varying specification key: the field's mean, with its standard deviation
    over the other keys, at each value of the key."""
    figures: list[Any] = []
    for name in data.result_fields:
        for key in data.varying_keys():
            points = sorted(
                (
                    (json.loads(value), spread)
                    for (field, k, value), spread in data.effects.items()
                    if (field, k) == (name, key)
                ),
                key=lambda point: _sort_key(point[0]),
            )
            if len(figures) == MAX_RESULT_PLOTS or not points:
                continue
            x = [value if _is_number(value) else json.dumps(value) for value, _ in points]
            figure = go.Figure(
                go.Scatter(
                    x=x,
                    y=[spread.mean for _, spread in points],
                    error_y={"type": "data", "array": [spread.deviation for _, spread in points]},
                    mode="lines+markers",
                    text=[f"{spread.count} runs" for _, spread in points],
                )
            )
            figure.update_layout(
                title=f"{name} by {key}", xaxis_title=key, yaxis_title=f"{name} (mean ± sd)", height=360
            )
            if not all(_is_number(value) for value, _ in points):
                figure.update_xaxes(type="category")
            figures.append(figure)
    return figures


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple[int, float, str]:
    return (0, value, "") if _is_number(value) else (1, 0.0, json.dumps(value))


def _results_note(data: ReportData, plots: int) -> str:
    if not plots:
        return "<p>No numeric result field varies with a specification key (or no run has completed).</p>"
    return (
        f'<p class="note">The mean of each numeric result field of the completed runs at each value of each '
        f"specification key that varies, with the standard deviation over the other keys as error bars (at most "
        f"{MAX_RESULT_FIELDS} fields and {MAX_RESULT_PLOTS} plots; keys with more than {MAX_KEY_VALUES} values "
        "are left out).</p>"
    )


def _status_table(data: ReportData) -> str:
    cells = "".join(f"<tr><td>{status}</td><td>{data.counts.get(status, 0)}</td></tr>" for status in STATUSES)
    return f"<table><tr><th>status</th><th>runs</th></tr>{cells}<tr><td>total</td><td>{data.total}</td></tr></table>"


def _failures(data: ReportData) -> str:
    if not data.failures:
        return "<p>No run failed.</p>"
    parts = []
    for group in data.failures:
        parts.append(
            f"<h3>{html.escape(group.error_type)}: {group.count} run(s)</h3>"
            f"<p>For example run {group.spec_hash[:12]}: {html.escape(group.message)}</p>"
            f"<pre>{html.escape(group.traceback)}</pre>"
        )
    return "".join(parts)


def _runs_table(data: ReportData) -> str:
    varying = data.varying_keys()
    columns = ["hash", "status", "attempts", "host", "started", "duration_s", "error type", *varying, "result"]
    header = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    rows = []
    for run in data.table:
        specification = run["specification"]
        values = [run[column] for column in columns[:7]]
        values += [json.dumps(specification[key]) if key in specification else "" for key in varying]
        values.append(run["result"])
        rows.append("<tr>" + "".join(f"<td>{html.escape(_cell(value))}</td>" for value in values) + "</tr>")
    shown = f"the first {MAX_TABLE_ROWS:,} of {data.total:,}" if data.total > MAX_TABLE_ROWS else "every run"
    note = (
        f'<p class="note">Click a column heading to sort. Shown: {shown} (<code>smallab-db runs</code> lists all).</p>'
    )
    return f'{note}<table class="sortable"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)
