"""Sweeps: run many configs on a local process pool, on Ray, or inline, and gather the table.

Workers receive a `Job` — the kind's name, the module that registered it (recorded by
`register_kind`), the resolved config as JSON and the root directory — never a pickled model:
each worker imports that module by name and validates the JSON itself. Finished runs are
read back in the parent without starting a worker, so re-running a finished sweep costs
seconds. A run that raises is recorded as failed and the others go on; a worker that dies
(segfault, out of memory) fails the runs it took down, which the next sweep retries.

Executors:
  inline  one run after another in this process (debugging, tests)
  local   concurrent.futures.ProcessPoolExecutor with the spawn start method; each worker uses
          cpu_count // workers torch threads, so that workers do not oversubscribe the cores
  ray     one Ray task (num_cpus=1) per run; ``ray.init(address=...)`` to join a cluster, or a
          local Ray with the machine's cores. On a multi-node cluster, `root` must be a shared
          filesystem for the cache and resume to work across nodes (records come back either way).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from irlhf.experiments.config import canonical_json, run_id
from irlhf.experiments.errors import ConfigError
from irlhf.experiments.registry import get_kind, kind_of, registered_kinds
from irlhf.experiments.results import results_table
from irlhf.experiments.run import RunResult, finished_result, one_line, run_dir_of, run_one

EXECUTORS = ("local", "ray", "inline")

OnDone = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class Job:
    """What a worker needs to run one config; plain strings, so any executor can ship it."""

    kind: str
    module: str
    config_json: str
    root: str


def make_job(config: BaseModel, root: Path) -> Job:
    kind = kind_of(config)
    return Job(kind.name, kind.module, canonical_json(config), str(root))


def run_job(job: Job) -> dict[str, Any]:
    """Worker entry point: import the module that registers the kind, rebuild the config from
    JSON, run it."""
    importlib.import_module(job.module)
    if job.kind not in registered_kinds():
        raise RuntimeError(f"importing {job.module} did not register the kind {job.kind!r}")
    config = get_kind(job.kind).config_model.model_validate_json(job.config_json)
    return run_one(config, Path(job.root)).to_dict()


def _crashed(job: Job, exc: BaseException) -> dict[str, Any]:
    """The result of a run whose worker died before it could report."""
    config = get_kind(job.kind).config_model.model_validate_json(job.config_json)
    run_dir = run_dir_of(config, Path(job.root))
    error = f"worker died: {one_line(exc)}"
    return RunResult(run_id(config), job.kind, run_dir, "failed", error=error).to_dict()


# ---- executors --------------------------------------------------------------------------------


def _execute_inline(jobs: Sequence[Job], on_done: OnDone, **_: Any) -> None:
    for i, job in enumerate(jobs):
        on_done(i, run_job(job))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _execute_local(jobs: Sequence[Job], on_done: OnDone, max_workers: int | None, **_: Any) -> None:
    cpus = os.cpu_count() or 1
    workers = max(1, min(max_workers or cpus, len(jobs)))
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(max(1, cpus // workers),),
    )
    try:
        futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # BrokenProcessPool and the like
                result = _crashed(jobs[i], exc)
            on_done(i, result)
    except BaseException:
        # Ctrl-C: drop the queued runs instead of finishing them; interrupted runs resume later.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _execute_ray(jobs: Sequence[Job], on_done: OnDone, address: str | None, **_: Any) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1, max_retries=0)(run_job)
    refs = {task.remote(job): i for i, job in enumerate(jobs)}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except Exception as exc:  # the task's worker died
                    result = _crashed(jobs[refs[ref]], exc)
                on_done(refs[ref], result)
    except BaseException:
        for ref in pending:  # Ctrl-C: do not leave our tasks running on a shared cluster
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


_EXECUTE: dict[str, Callable[..., None]] = {
    "inline": _execute_inline,
    "local": _execute_local,
    "ray": _execute_ray,
}


# ---- progress ---------------------------------------------------------------------------------


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs  [red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


# ---- sweeps -----------------------------------------------------------------------------------


def check_executor(
    executor: str, address: str | None = None, max_workers: int | None = None
) -> None:
    """Validate executor options (ConfigError naming the option and the allowed values)."""
    if executor not in EXECUTORS:
        allowed = ", ".join(EXECUTORS)
        raise ConfigError("--executor", f"must be one of: {allowed} (got {executor!r})")
    if address is not None and executor != "ray":
        raise ConfigError("--address", f"only used with --executor ray (got {executor!r})")
    if max_workers is not None and max_workers < 1:
        raise ConfigError("--workers", f"must be >= 1 (got {max_workers})")


def execute_runs(
    runs: Sequence[tuple[BaseModel, Path]],
    executor: str = "local",
    address: str | None = None,
    max_workers: int | None = None,
    progress: bool = True,
    description: str = "runs",
) -> list[RunResult]:
    """Run every (config, root) pair, finished ones read back, in the given order.

    Duplicates (the same run id, in one root or in several: e.g. two studies of one
    `irlhf reproduce` sharing a grid point) run once and share the result; in every other root
    the run's directory becomes a relative symlink to the one that ran (`_link_duplicates`).
    """
    check_executor(executor, address, max_workers)
    keys = [(str(root), run_id(config)) for config, root in runs]
    unique = dict(zip(keys, runs, strict=True))
    copies: dict[str, list[tuple[str, str]]] = {}  # run id -> its (root, run id) keys
    for key in unique:
        copies.setdefault(key[1], []).append(key)
    results: dict[tuple[str, str], RunResult] = {}
    todo: list[tuple[tuple[str, str], Job]] = []
    for same in copies.values():
        for key in same:
            done = finished_result(*unique[key])
            if done is not None:
                results.update(dict.fromkeys(same, done))
                break
        else:
            todo.append((same[0], make_job(*unique[same[0]])))
    with _progress_bar(progress) as bar:
        done_ids = len({key[1] for key in results})
        task = bar.add_task(description, total=len(copies), completed=done_ids, failed=0)
        failed = 0

        def on_done(i: int, result: dict[str, Any]) -> None:
            nonlocal failed
            key = todo[i][0]
            results.update(dict.fromkeys(copies[key[1]], RunResult.from_dict(result)))
            failed += result["status"] != "done"
            bar.update(task, advance=1, failed=failed)

        if todo:
            _EXECUTE[executor](
                [job for _, job in todo], on_done, max_workers=max_workers, address=address
            )
    _link_duplicates(unique, copies)
    return [results[key] for key in keys]


def _link_duplicates(
    unique: dict[tuple[str, str], tuple[BaseModel, Path]],
    copies: dict[str, list[tuple[str, str]]],
) -> None:
    """Every copy of a run whose directory is missing in its root: a relative symlink to the
    directory of the copy that exists (the one that ran or was read back)."""
    for same in copies.values():
        dirs = [run_dir_of(*unique[key]) for key in same]
        source = next((d for d in dirs if d.is_dir()), None)
        if source is None:
            continue
        for target in dirs:
            if not target.exists() and not target.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(os.path.relpath(source, target.parent), target_is_directory=True)


def run_sweep(
    configs: Sequence[BaseModel],
    root: Path,
    executor: str = "local",
    address: str | None = None,
    max_workers: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every config under `root` and return the long results table (see `results`)."""
    root = Path(root)
    unique = list({run_id(c): c for c in configs}.values())
    results = execute_runs(
        [(config, root) for config in unique], executor, address, max_workers, progress, "sweep"
    )
    return results_table(zip(unique, results, strict=True))
