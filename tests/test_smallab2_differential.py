"""The same smallab 2.x script run by the real smallab 2.3.1 and by smallab_db, with only ``smallab`` renamed to
``smallab_db`` in its imports: ``experiment_iterator`` yields the same records for plain, parallel, checkpointed,
overlapping-output, failing and unpicklable experiments.

Each side runs in a fresh interpreter in a folder of its own (smallab 2.3.1 works below ``./experiment_runs``), and
runs the batch twice, as scripts do to finish what failed: the second call must add nothing and lose nothing.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import processes
import pytest

SCRIPT = Path(__file__).resolve().parent / "smallab2_scripts" / "differential.py"
CASES = ["plain", "processes", "checkpointed", "overlapping", "failing", "unpicklable"]


def renamed(source: str) -> str:
    """The script with its imports renamed from smallab to smallab_db, as a user would do it, and nothing else."""
    return re.sub(r"^from smallab\.", "from smallab_db.", source, flags=re.MULTILINE)


def records(folder: Path, source: str, case: str) -> list[Any]:
    """Run the script in ``folder``; return the records it read back, in a canonical order."""
    folder.mkdir()
    (folder / "script.py").write_text(source)
    environment = {key: value for key, value in os.environ.items() if key != "SMALLAB_DB"}
    done = processes.run(
        [sys.executable, "script.py", case, "records.json"], timeout=240, cwd=folder, env=environment, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads((folder / "records.json").read_text())
    return sorted(found, key=lambda record: json.dumps(record, sort_keys=True))


@pytest.mark.parametrize("case", CASES)
def test_smallab_db_yields_what_smallab_2_3_1_yields(tmp_path: Path, case: str) -> None:
    source = SCRIPT.read_text()
    assert "import smallab_db" not in source and "from smallab_db" not in source
    theirs = records(tmp_path / "smallab", source, case)
    ours = records(tmp_path / "smallab_db", renamed(source), case)
    assert ours == theirs
    if case in ("plain", "processes", "checkpointed", "overlapping", "failing"):
        assert theirs, "smallab 2.3.1 yielded nothing: the case tests nothing"
    if case == "unpicklable":  # neither keeps a run whose result cannot be saved
        assert theirs == []
    if case == "overlapping":
        assert sum(record["result"] == [] for record in theirs) == 2  # the given specifications, marked done
