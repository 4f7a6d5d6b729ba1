"""The same sweep on the local process pool and on Ray gives the same table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from test_sweeps import comparable, grid

from irlhf.experiments import run_sweep

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A 2-CPU local Ray (workers inherit $PYTHONPATH from the test, and import the toy kind's
    module by name)."""
    monkeypatch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "disabled"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_local_and_ray_executors_give_identical_tables(tmp_path: Path, local_ray: None) -> None:
    configs = grid(fail_on_seed=1)
    on_ray = run_sweep(configs, tmp_path / "ray", executor="ray", progress=False)
    local = run_sweep(configs, tmp_path / "local", executor="local", progress=False)
    assert (on_ray["status"] == "done").sum() == 4 and (on_ray["status"] == "failed").sum() == 2
    pd.testing.assert_frame_equal(comparable(on_ray), comparable(local))
    # Cached: a second Ray sweep reads every finished run back.
    again = run_sweep(configs, tmp_path / "ray", executor="ray", progress=False)
    pd.testing.assert_frame_equal(comparable(again), comparable(on_ray))
