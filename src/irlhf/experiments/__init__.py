"""The experiment platform: TOML configs, content-addressed runs with resume, sweeps, results.

Science code registers an experiment kind (a pydantic config model, a run function and a
results version) with `register_kind`, at import of its module; the platform imports no science
module itself (worker processes import the module a kind was registered from, by name). It then
loads and validates configs (`load_config`, `load_sweep`, `expand_sweep`), runs them in
content-addressed directories that resume after any interruption (`run_one`), executes sweeps on
a local process pool, Ray or inline (`run_sweep`) and stores the long results table as Parquet
(`write_results`, `read_results`).
"""

from irlhf.experiments.checkpoint import Checkpoint, CheckpointWarning
from irlhf.experiments.config import (
    canonical_json,
    expand_sweep,
    load_config,
    load_sweep,
    parse_config,
    run_hash,
    run_id,
)
from irlhf.experiments.errors import ConfigError
from irlhf.experiments.registry import get_kind, register_kind, registered_kinds
from irlhf.experiments.results import read_results, results_table, write_results
from irlhf.experiments.run import RunContext, RunResult, run_one
from irlhf.experiments.sweep import EXECUTORS, execute_runs, run_sweep

__all__ = [
    "EXECUTORS",
    "Checkpoint",
    "CheckpointWarning",
    "ConfigError",
    "RunContext",
    "RunResult",
    "canonical_json",
    "execute_runs",
    "expand_sweep",
    "get_kind",
    "load_config",
    "load_sweep",
    "parse_config",
    "read_results",
    "register_kind",
    "registered_kinds",
    "results_table",
    "run_hash",
    "run_id",
    "run_one",
    "run_sweep",
    "write_results",
]
