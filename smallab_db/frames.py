"""Loading a batch's runs into a pandas DataFrame (pandas is the optional extra ``smallab-db[pandas]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smallab_db.batches import batch_id_or_error
from smallab_db.errors import MissingDependencyError
from smallab_db.queries import RunQueries
from smallab_db.results import Unpickler, duration_seconds

if TYPE_CHECKING:
    import pandas

RUN_COLUMNS = ["status", "duration_s", "attempts", "spec_hash", "error_type"]


def load_dataframe(queries: RunQueries, name: str) -> pandas.DataFrame:
    """Return one row per run of batch ``name``, indexed by run id.

    Columns: ``spec.<key>`` and ``result.<key>`` (nested dict keys joined with dots), then ``status``,
    ``duration_s``, ``attempts``, ``spec_hash`` and ``error_type``. A result that is not JSON is unpickled; one that
    no longer unpickles leaves its result columns empty and is named in an :class:`UnreadableResultWarning`.

    Raises:
        MissingDependencyError: pandas is not installed.
        UsageError: there is no batch ``name``.
    """
    try:
        import pandas
    except ImportError as error:
        raise MissingDependencyError(
            "runner.dataframe() needs pandas, which is not installed: pip install 'smallab-db[pandas]'"
        ) from error
    batch_id = batch_id_or_error(queries, name)
    unpickler = Unpickler(name)
    index: list[int] = []
    records: list[dict[str, Any]] = []
    for row in queries.iter_run_summaries(batch_id):
        record: dict[str, Any] = {}
        _flatten("spec", row.specification, record)
        result = row.result_json
        if row.result_pickle is not None:
            _, result = unpickler.load(row.result_pickle, row.id, row.spec_hash)
        if result is not None:
            _flatten("result", result, record)
        record.update(
            status=row.status,
            duration_s=duration_seconds(row.started_at, row.finished_at),
            attempts=row.attempts,
            spec_hash=row.spec_hash,
            error_type=row.error_type,
        )
        index.append(row.id)
        records.append(record)
    unpickler.warn()
    frame = pandas.DataFrame.from_records(records, index=pandas.Index(index, name="run_id"))
    data_columns = sorted(
        (column for column in frame.columns if column not in RUN_COLUMNS),
        key=lambda column: (not column.startswith("spec."), column),
    )
    return frame.reindex(columns=data_columns + RUN_COLUMNS)


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into)
    else:
        into[prefix] = value
