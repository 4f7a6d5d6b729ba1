"""The results store: one long table per sweep or study (one row per run x metric record).

Columns: run_id, kind, status, error, seconds, every config field flattened with dotted names
("world.exit_prob"), then the record's keys (metric, value, coordinates such as L). A failed run
has one row with its error and metric/value missing. Config values that are lists or tables are
stored as JSON text. Stored as Parquet (pyarrow); `read_results` gives the pandas DataFrame back.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from irlhf.experiments.config import flatten, resolved
from irlhf.experiments.run import RunResult
from irlhf.experiments.storage import atomic_write_bytes

RUN_COLUMNS = ["run_id", "kind", "status", "error", "seconds"]
RECORD_COLUMNS = ["metric", "value"]
TIMING_COLUMNS = ["seconds"]


def _cell(value: Any) -> Any:
    """A table cell: scalars as they are, lists and tables as JSON text."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _run_rows(config_fields: dict[str, Any], result: RunResult) -> list[dict[str, Any]]:
    base = {
        "run_id": result.run_id,
        "kind": result.kind,
        "status": result.status,
        "error": result.error,
        "seconds": result.seconds,
        **{k: _cell(v) for k, v in config_fields.items()},
    }
    if result.status != "done" or not result.records:
        return [{**base, "metric": None, "value": math.nan}]
    return [{**base, **{k: _cell(v) for k, v in record.items()}} for record in result.records]


def results_table(runs: Iterable[tuple[Any, RunResult]]) -> pd.DataFrame:
    """The long table of (config, result) pairs, in the given order."""
    rows: list[dict[str, Any]] = []
    config_columns: dict[str, None] = {}
    record_columns: dict[str, None] = {}
    for config, result in runs:
        fields = flatten(resolved(config))
        config_columns.update(dict.fromkeys(fields))
        for record in result.records:
            record_columns.update(dict.fromkeys(record))
        rows.extend(_run_rows(fields, result))
    leading = RUN_COLUMNS + [c for c in config_columns if c not in RUN_COLUMNS]
    trailing = RECORD_COLUMNS + [c for c in record_columns if c not in leading + RECORD_COLUMNS]
    columns = leading + [c for c in trailing if c not in leading]
    table = pd.DataFrame(rows, columns=columns)
    table["value"] = table["value"].astype(float)
    table["seconds"] = table["seconds"].astype(float)
    for column in columns:
        if _ints_with_gaps([row.get(column) for row in rows]):
            table[column] = table[column].astype("Int64")  # not float: L=8 stays 8, not 8.0
    return table


def _ints_with_gaps(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in present)
    return bool(present) and ints and len(present) < len(values)


def _arrow_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Columns pyarrow cannot type (mixed int/str across kinds) become text."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype != object:
            continue
        try:
            pa.array(table[column], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            table[column] = table[column].map(lambda v: None if v is None else str(v))
    return table


def write_results(table: pd.DataFrame, path: Path) -> None:
    """Write a results table as Parquet, atomically."""
    buffer = io.BytesIO()
    _arrow_safe(table).to_parquet(buffer, engine="pyarrow", index=False)
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_results(path: Path) -> pd.DataFrame:
    """Read a results table written by `write_results`."""
    return pd.read_parquet(Path(path), engine="pyarrow")
