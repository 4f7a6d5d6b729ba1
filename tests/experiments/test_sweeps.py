"""Sweeps: failures recorded, finished runs skipped, the results table and its Parquet file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from toykind import MARKER_ENV, CounterConfig, CounterWorld

from irlhf.experiments import ConfigError, read_results, run_sweep, write_results
from irlhf.experiments import sweep as sweep_module


def grid(fail_on_seed: int | None = None) -> list[CounterConfig]:
    return [
        CounterConfig(seed=seed, steps=8, fail_on_seed=fail_on_seed, world=CounterWorld(scale=s))
        for seed in (0, 1)
        for s in (0.25, 1.0)
    ]


def markers(tmp_path: Path) -> int:
    directory = tmp_path / "markers"
    return len(list(directory.iterdir())) if directory.exists() else 0


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """The table without timing, in a canonical row order."""
    return table.drop(columns=["seconds"]).sort_values(["run_id", "metric"]).reset_index(drop=True)


@pytest.mark.parametrize("executor", ["inline", pytest.param("local", marks=pytest.mark.slow)])
def test_failing_point_is_recorded_and_the_others_complete(tmp_path: Path, executor: str) -> None:
    table = run_sweep(grid(fail_on_seed=1), tmp_path, executor=executor, progress=False)
    runs = table.drop_duplicates("run_id").set_index("seed")
    assert sorted(runs.loc[0, "status"]) == ["done", "done"]
    failed = table[table["status"] == "failed"]
    assert len(failed) == 2 and set(failed["seed"]) == {1}
    assert (failed["error"] == "RuntimeError: deliberate failure at seed 1").all()
    assert failed["metric"].isna().all() and failed["value"].isna().all()
    done = table[table["status"] == "done"]
    assert len(done) == 4 and set(done["metric"]) == {"total", "mean"}
    for run_id in failed["run_id"]:
        run_dir = tmp_path / "counter" / run_id
        assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
        assert "deliberate failure" in (run_dir / "traceback.txt").read_text()


def test_table_columns(tmp_path: Path) -> None:
    table = run_sweep(grid(), tmp_path, executor="inline", progress=False)
    assert list(table.columns[:5]) == ["run_id", "kind", "status", "error", "seconds"]
    assert {"seed", "steps", "world.scale", "world.mode", "metric", "value", "L"} <= set(table)
    assert len(table) == 8 and table["run_id"].nunique() == 4
    mean = table[table["metric"] == "mean"]
    assert (mean["L"] == 8).all() and table.loc[table["metric"] == "total", "L"].isna().all()


def test_rerunning_a_finished_sweep_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    first = run_sweep(grid(fail_on_seed=1), tmp_path / "runs", executor="inline", progress=False)
    assert markers(tmp_path) == 4

    # Only the two failed runs run again; the finished ones are read back.
    second = run_sweep(grid(fail_on_seed=1), tmp_path / "runs", executor="inline", progress=False)
    assert markers(tmp_path) == 6
    pd.testing.assert_frame_equal(comparable(first), comparable(second))

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished sweep must not start workers")

    run_sweep(grid(), tmp_path / "runs", executor="inline", progress=False)
    assert markers(tmp_path) == 6 + 4
    # A finished sweep on the local executor does not even start the worker pool.
    monkeypatch.setattr(sweep_module, "ProcessPoolExecutor", no_pool)
    cached = run_sweep(grid(), tmp_path / "runs", executor="local", progress=False)
    assert markers(tmp_path) == 10 and (cached["status"] == "done").all()


def test_duplicate_configs_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    table = run_sweep(grid() + grid(), tmp_path / "runs", executor="inline", progress=False)
    assert markers(tmp_path) == 4 and table["run_id"].nunique() == 4 and len(table) == 8


def test_a_run_shared_by_two_roots_runs_once_and_the_other_root_links_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two studies of one reproduce share a grid point: it runs once; the second root's run
    directory is a relative symlink to the first's, and both read back as finished."""
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    config = CounterConfig(seed=3, steps=4)
    roots = [tmp_path / "a" / "runs", tmp_path / "b" / "runs"]
    first = sweep_module.execute_runs(
        [(config, roots[0]), (config, roots[1])], executor="inline", progress=False
    )
    assert markers(tmp_path) == 1 and first[0].records == first[1].records
    linked = sweep_module.run_dir_of(config, roots[1])
    assert linked.is_symlink() and not Path(linked.readlink()).is_absolute()
    assert linked.resolve() == sweep_module.run_dir_of(config, roots[0]).resolve()
    again = sweep_module.execute_runs([(config, roots[1])], executor="inline", progress=False)
    assert markers(tmp_path) == 1 and again[0].records == first[0].records  # read back


def test_parquet_round_trip(tmp_path: Path) -> None:
    table = run_sweep(grid(fail_on_seed=0), tmp_path, executor="inline", progress=False)
    write_results(table, tmp_path / "results.parquet")
    back = read_results(tmp_path / "results.parquet")
    assert list(back.columns) == list(table.columns) and len(back) == len(table)
    for column in ["value", "seconds", "seed", "world.scale"]:
        assert back[column].tolist() == pytest.approx(table[column].tolist(), nan_ok=True)
    assert back["error"].dropna().tolist() == table["error"].dropna().tolist()
    assert math.isnan(back.loc[back["status"] == "failed", "value"].iloc[0])


def test_executor_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--executor: must be one of: local, ray, inline"):
        run_sweep(grid(), tmp_path, executor="dask")
    with pytest.raises(ConfigError, match="--address: only used with --executor ray"):
        run_sweep(grid(), tmp_path, executor="local", address="1.2.3.4:6379")
    with pytest.raises(ConfigError, match="--workers: must be >= 1"):
        run_sweep(grid(), tmp_path, executor="local", max_workers=0)
    assert not any(tmp_path.iterdir())
