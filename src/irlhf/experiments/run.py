"""One experiment run in its content-addressed directory, with resume after any interruption.

Layout of ``<root>/<kind>/<run id>/``:

    config.json        the resolved config (every default filled in)
    status.json        {"state": "running"|"done"|"failed", "error", "seconds", "attempts", ...}
    metrics.jsonl      the run's final metric records (written once, at the end)
    metrics_log.jsonl  training curves, appended by `RunContext.log`
    samples/NAME.jsonl samples saved by `RunContext.save_samples`
    checkpoints/       safetensors checkpoints (the newest two)
    traceback.txt      the full traceback of the last failure
    .lock              held while the run runs (a second process given it waits for it)

A run whose status is "done" is not run again: its records are read back. Any other run (never
started, killed, failed) is (re)started; the run function asks `ctx.load_checkpoint()` for the
newest good checkpoint and continues from it, and the training curve is cut back to the lines it
had at that checkpoint, so an interrupted run ends with the same records and curves as an
uninterrupted one.
"""

from __future__ import annotations

import os
import re
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from irlhf.experiments.checkpoint import Checkpoint, load_latest, write_checkpoint
from irlhf.experiments.config import resolved, run_id
from irlhf.experiments.provenance import utc_now
from irlhf.experiments.registry import kind_of
from irlhf.experiments.storage import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    exclusive_lock,
    read_json,
    read_jsonl,
    truncate_jsonl,
    write_jsonl,
)

CONFIG_FILE, STATUS_FILE, METRICS_FILE = "config.json", "status.json", "metrics.jsonl"
LOG_FILE, TRACEBACK_FILE = "metrics_log.jsonl", "traceback.txt"
CHECKPOINT_DIR, SAMPLES_DIR, LOCK_FILE = "checkpoints", "samples", ".lock"
RESERVED_KEYS = frozenset({"run_id", "kind", "status", "error", "seconds"})
_SAMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunContext:
    """What a run function gets besides its config: its directory and crash-safe helpers."""

    def __init__(self, run_dir: Path, config: BaseModel):
        self.run_dir = Path(run_dir)
        self.config = config
        self._checkpoint: Checkpoint | None = None
        self._checkpoint_current = False
        self._log_lines = 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def resume(self) -> Checkpoint | None:
        """Find the newest good checkpoint and cut the training curve back to it (or to nothing
        if there is none). Called by `run_one` before the run function starts."""
        self._checkpoint = load_latest(self.checkpoint_dir)
        self._checkpoint_current = True
        self._log_lines = self._checkpoint.log_lines if self._checkpoint else 0
        truncate_jsonl(self.run_dir / LOG_FILE, self._log_lines)
        return self._checkpoint

    def load_checkpoint(self) -> Checkpoint | None:
        """The newest good checkpoint, or None to start from scratch."""
        if not self._checkpoint_current:
            self._checkpoint = load_latest(self.checkpoint_dir)
            self._checkpoint_current = True
        return self._checkpoint

    def save_checkpoint(self, step: int, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        """Save the training state after `step` (safetensors, atomic; the last two are kept).
        Put everything needed to continue in it, generator states included (as uint8 tensors)."""
        write_checkpoint(self.checkpoint_dir, step, tensors, meta, log_lines=self._log_lines)
        self._checkpoint_current = False

    def log(self, record: dict[str, Any]) -> None:
        """Append one point of a training curve to metrics_log.jsonl."""
        append_jsonl(self.run_dir / LOG_FILE, record)
        self._log_lines += 1

    def save_samples(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Write samples/<name>.jsonl (atomically; a later call with the same name replaces it)."""
        if not _SAMPLE_NAME.match(name):
            raise ValueError(f"sample name must match {_SAMPLE_NAME.pattern} (got {name!r})")
        write_jsonl(self.run_dir / SAMPLES_DIR / f"{name}.jsonl", rows)


@dataclass
class RunResult:
    """The outcome of one run."""

    run_id: str
    kind: str
    run_dir: Path
    status: str  # "done" | "failed"
    records: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    skipped: bool = False  # True when read back from a finished run directory

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "run_dir": str(self.run_dir)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(**{**data, "run_dir": Path(data["run_dir"])})


def run_dir_of(config: BaseModel, root: Path) -> Path:
    """Where a config's run lives: root/<kind>/<run id>."""
    return Path(root) / kind_of(config).name / run_id(config)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status.json, or None if it has none (or an unreadable one)."""
    try:
        return read_json(Path(run_dir) / STATUS_FILE)
    except (OSError, ValueError):
        return None


def finished_result(config: BaseModel, root: Path) -> RunResult | None:
    """The result of a run that already finished ("done"), read back; None otherwise."""
    run_dir = run_dir_of(config, root)
    status = read_status(run_dir)
    if not status or status.get("state") != "done" or not (run_dir / METRICS_FILE).exists():
        return None
    return RunResult(
        run_id=run_dir.name,
        kind=run_dir.parent.name,
        run_dir=run_dir,
        status="done",
        records=read_jsonl(run_dir / METRICS_FILE),
        seconds=float(status.get("seconds", 0.0)),
        skipped=True,
    )


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _scalar(value: Any, where: str) -> Any:
    """A JSON scalar from a record value (numpy/torch scalars via .item())."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"{where} must be a str/int/float/bool/None (got {type(value).__name__})")


def normalize_records(records: Any) -> list[dict[str, Any]]:
    """Check the run function's records: a list of dicts with a str "metric", a numeric "value"
    and JSON-scalar coordinates, none of them named like a results-table column."""
    if not isinstance(records, list):
        raise TypeError(f"a run must return a list of records (got {type(records).__name__})")
    clean = []
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("metric"), str):
            raise TypeError(f"record {i} must be a dict with a str 'metric' (got {record!r:.80})")
        if "value" not in record:
            raise TypeError(f"record {i} ({record['metric']}) has no 'value'")
        reserved = RESERVED_KEYS & set(record)
        if reserved:
            raise ValueError(f"record {i} uses reserved key(s) {sorted(reserved)}")
        row = {str(k): _scalar(v, f"record {i} key {k!r}") for k, v in record.items()}
        if isinstance(row["value"], (str, bool)) or row["value"] is None:
            raise TypeError(f"record {i} ({row['metric']}): 'value' must be a number")
        row["value"] = float(row["value"])
        clean.append(row)
    return clean


def _write_status(run_dir: Path, **status: Any) -> None:
    atomic_write_json(run_dir / STATUS_FILE, status)


def run_one(config: BaseModel, root: Path) -> RunResult:
    """Run one experiment in root/<kind>/<hash>/, or read it back if it already finished.

    The run function's exceptions are caught and recorded (status "failed", traceback.txt);
    KeyboardInterrupt and other BaseExceptions propagate and leave the run resumable. Two
    processes given the same run (two sweeps into one directory) do not run it side by side:
    the second waits for the first (a lock file in the run directory), then reads its result
    back if it finished, or else does what any later call does (resumes a crashed run from its
    checkpoint, retries a failed one). A run function must not call `run_one` for its own
    config (it would wait for itself).
    """
    done = finished_result(config, root)
    if done is not None:
        return done
    with exclusive_lock(run_dir_of(config, root) / LOCK_FILE):
        done = finished_result(config, root)  # finished by another process while we waited
        if done is not None:
            return done
        return _run_unlocked(config, root)


def _run_unlocked(config: BaseModel, root: Path) -> RunResult:
    kind = kind_of(config)
    run_dir = run_dir_of(config, root)
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG_FILE, resolved(config))
    previous = read_status(run_dir) or {}
    common = {
        "run_id": run_dir.name,
        "kind": kind.name,
        "attempts": int(previous.get("attempts", 0)) + 1,
        "started": utc_now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    _write_status(run_dir, state="running", error=None, seconds=None, **common)
    result = RunResult(run_id=run_dir.name, kind=kind.name, run_dir=run_dir, status="done")
    start = time.perf_counter()
    try:
        ctx = RunContext(run_dir, config)
        ctx.resume()
        result.records = normalize_records(kind.run(config, ctx))
    except Exception as exc:
        result.status, result.error = "failed", one_line(exc)
        atomic_write_text(run_dir / TRACEBACK_FILE, traceback.format_exc())
    result.seconds = time.perf_counter() - start
    if result.status == "done":
        write_jsonl(run_dir / METRICS_FILE, result.records)
        (run_dir / TRACEBACK_FILE).unlink(missing_ok=True)
    state = {"state": result.status, "error": result.error, "seconds": result.seconds}
    _write_status(run_dir, **state, finished=utc_now(), **common)
    return result
