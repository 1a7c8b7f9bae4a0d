"""Results CSVs of the benchmarks: '#' comment lines (planner version, machine, date,
method), then a header row and one row per measurement. One reader and one writer for
every script and test, and the refresh of a CSV's predicted columns after a change to
the memory model (the measurements stay as measured)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def read_results(path: Path | str) -> tuple[list[str], list[dict[str, str]]]:
    """(comment lines, rows) of a results CSV."""
    lines = Path(path).read_text().splitlines(keepends=True)
    comments = [line for line in lines if line.startswith("#")]
    return comments, list(csv.DictReader(line for line in lines if not line.startswith("#")))


def read_rows(path: Path | str) -> list[dict[str, str]]:
    return read_results(path)[1]


def write_results(path: Path | str, comments: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the comment lines (each starting with '#') and the rows, columns in the first row's order."""
    path = Path(path)
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as fh:
        fh.writelines(line if line.endswith("\n") else line + "\n" for line in comments)
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def refresh_predictions(path: Path | str, predicted: Callable[[dict[str, str]], Mapping[str, int]]) -> int:
    """Replace the predicted columns of a results CSV with `predicted(row)` (column -> bytes, one of them
    predicted_allocated_bytes) and recompute allocated_error_pct; columns the CSV lacks are skipped."""
    comments, rows = read_results(path)
    for row in rows:
        for column, value in predicted(row).items():
            if column in row:
                row[column] = str(value)
        measured, allocated = int(row["measured_allocated_bytes"]), int(row["predicted_allocated_bytes"])
        if measured > 0:
            row["allocated_error_pct"] = str(round(100 * (allocated - measured) / measured, 2))
    write_results(path, comments, rows)
    return len(rows)
