"""``smallab-db report``: one self-contained HTML file about a batch, with plots, that works offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from smallab_db import cli_output, report_html
from smallab_db.batches import batch_id_or_error
from smallab_db.cli import PathParameter, batch_option, database_argument, main, reading_database
from smallab_db.errors import ExportError, describe_os_error
from smallab_db.layouts.files import write_file
from smallab_db.report_data import gather


class OutputFile(PathParameter):
    """The path of a file to write: not a folder, which a trailing slash or an existing folder would name."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = super().convert(value, param, ctx)
        if str(value).endswith(("/", os.sep)) or path.is_dir():
            self.fail(f"{value!r:.1000} is a folder: give a file name, such as report.html", param, ctx)
        return path


@main.command()
@database_argument
@batch_option
@click.option("-o", "--output", required=True, type=OutputFile(), metavar="FILE", help="The HTML file to write.")
def report(url: str | None, batch: str, output: Path) -> None:
    """Write one HTML file about a batch, which works offline (plotly.js is inside it): status counts, a timeline of
    runs per host, the distribution of durations, each numeric result field against each specification key that
    varies (mean and standard deviation over the other keys), failures grouped by error type with one traceback
    each, and a sortable table of runs (the first 1,000).

    Needs plotly: pip install 'smallab-db[report]'. Memory stays flat however big the batch: the runs are read
    once, as a stream, into bounded summaries.

    Example: smallab-db report results.db --batch doubling -o report.html
    """
    report_html.plotly()  # a missing extra is said before anything is read
    with reading_database(url) as queries:
        data = gather(queries, batch_id_or_error(queries, batch), batch)
    text = report_html.page(data)
    try:
        write_file(output, text.encode("utf-8", "surrogateescape"))
    except OSError as error:
        raise ExportError(f"cannot write the report: {describe_os_error(error)}") from error
    click.echo(f"wrote the report on batch {batch!r} ({data.total} runs) to {cli_output.printable(str(output))}")
