"""A run killed with SIGKILL resumes from its last checkpoint and ends with the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from toykind import SLEEP_ENV, CounterConfig

from irlhf.experiments import run_one
from irlhf.experiments.storage import read_jsonl

# A python -c entry point: the run in a fresh process, as `irlhf run` would do it.
ENTRY = (
    "import sys, toykind; from irlhf.experiments import load_config, run_one; "
    "run_one(load_config(sys.argv[1]), sys.argv[2])"
)


def start_run(config: CounterConfig, tmp_path: Path) -> subprocess.Popen:
    path = tmp_path / "run.toml"
    fields = config.model_dump(exclude={"world"}, exclude_none=True)
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
    command = [sys.executable, "-c", ENTRY, str(path), str(tmp_path / "runs")]
    env = {**os.environ, SLEEP_ENV: "0.04"}  # slow enough to be killed midway
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE)


def wait_for(condition, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def kill_and_resume(config: CounterConfig, tmp_path: Path, condition) -> None:
    run_dir = tmp_path / "runs" / "counter"
    process = start_run(config, tmp_path)
    try:
        wait_for(lambda: run_dir.exists() and condition(next(run_dir.iterdir())), process)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_dir = next(run_dir.iterdir())
    assert json.loads((killed_dir / "status.json").read_text())["state"] == "running"
    assert len(read_jsonl(killed_dir / "metrics_log.jsonl")) < config.steps

    resumed = run_one(config, tmp_path / "runs")
    reference = run_one(config, tmp_path / "reference")
    assert resumed.records == reference.records
    curve = read_jsonl(killed_dir / "metrics_log.jsonl")
    assert curve == read_jsonl(reference.run_dir / "metrics_log.jsonl")


def test_kill_after_a_checkpoint_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    config = CounterConfig(seed=11, steps=40, checkpoint_every=5)
    kill_and_resume(config, tmp_path, lambda d: any((d / "checkpoints").glob("step_*.safetensors")))


def test_kill_before_any_checkpoint_restarts_to_the_same_numbers(tmp_path: Path) -> None:
    config = CounterConfig(seed=12, steps=40, checkpoint_every=1000)
    kill_and_resume(config, tmp_path, lambda d: len(read_jsonl(d / "metrics_log.jsonl")) >= 3)
