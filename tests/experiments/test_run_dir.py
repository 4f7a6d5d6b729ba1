"""Run directories: layout, status, caching, failures, record checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toykind import MARKER_ENV, SLEEP_ENV, CounterConfig

from irlhf.experiments import RunContext, register_kind, run_hash, run_one
from irlhf.experiments.run import normalize_records
from irlhf.experiments.storage import read_jsonl


def test_run_directory_layout(tmp_path: Path) -> None:
    config = CounterConfig(seed=1, steps=12, checkpoint_every=5)
    result = run_one(config, tmp_path)
    run_dir = tmp_path / "counter" / run_hash(config)
    assert result.run_dir == run_dir and result.status == "done" and not result.skipped
    assert json.loads((run_dir / "config.json").read_text()) == config.model_dump(mode="json")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["error"] is None and status["seconds"] >= 0
    assert read_jsonl(run_dir / "metrics.jsonl") == result.records
    assert [r["step"] for r in read_jsonl(run_dir / "metrics_log.jsonl")] == list(range(1, 13))
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["step_0000000005.safetensors", "step_0000000010.safetensors"]
    assert not list(run_dir.rglob("*.tmp")), "no temporary files are left behind"


def test_finished_run_is_read_back_not_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    config = CounterConfig(seed=2)
    first = run_one(config, tmp_path / "runs")
    second = run_one(config, tmp_path / "runs")
    assert second.skipped and second.records == first.records
    assert len(list((tmp_path / "markers").iterdir())) == 1


def _run_in_another_process(seed: int, root: str, queue) -> None:
    from toykind import CounterConfig as Config  # (the child imports the kind afresh)

    result = run_one(Config(seed=seed, steps=10), Path(root))
    queue.put((result.status, result.skipped, result.records))


def test_two_processes_given_one_run_run_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sweeps into one directory: the second process waits for the first's run (a lock
    in the run directory) and reads it back instead of running it again beside it."""
    import multiprocessing

    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    monkeypatch.setenv(SLEEP_ENV, "0.05")  # 10 steps: ~0.5 s, long enough to overlap
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_run_in_another_process, args=(3, str(tmp_path / "runs"), queue))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(skipped for _, skipped, _ in results) == [False, True]
    assert all(status == "done" for status, _, _ in results)
    assert results[0][2] == results[1][2]
    assert len(list((tmp_path / "markers").iterdir())) == 1  # the run function ran once


def test_failed_run_is_recorded_and_retried(tmp_path: Path) -> None:
    config = CounterConfig(seed=4, fail_on_seed=4)
    result = run_one(config, tmp_path)
    assert result.status == "failed"
    assert result.error == "RuntimeError: deliberate failure at seed 4"
    status = json.loads((result.run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == result.error
    assert "Traceback" in (result.run_dir / "traceback.txt").read_text()
    again = run_one(config, tmp_path)
    assert not again.skipped and again.status == "failed"
    assert json.loads((result.run_dir / "status.json").read_text())["attempts"] == 2


def test_records_are_checked() -> None:
    assert normalize_records([{"metric": "m", "value": 1, "L": 3}]) == [
        {"metric": "m", "value": 1.0, "L": 3}
    ]
    with pytest.raises(TypeError, match="'value' must be a number"):
        normalize_records([{"metric": "m", "value": "high"}])
    with pytest.raises(TypeError, match="str 'metric'"):
        normalize_records([{"value": 1.0}])
    with pytest.raises(ValueError, match="reserved"):
        normalize_records([{"metric": "m", "value": 1.0, "status": "x"}])
    with pytest.raises(TypeError, match="list of records"):
        normalize_records({"metric": "m", "value": 1.0})


def test_samples_and_progress(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    ctx = RunContext(tmp_path, CounterConfig(seed=0), on_progress=lambda d, t: seen.append((d, t)))
    ctx.save_samples("greedy", [{"text": "a"}, {"text": "b"}])
    ctx.save_samples("greedy", [{"text": "c"}])
    assert read_jsonl(tmp_path / "samples" / "greedy.jsonl") == [{"text": "c"}]
    with pytest.raises(ValueError, match="sample name"):
        ctx.save_samples("../escape", [])
    ctx.progress(3, 3)
    assert seen == [(3, 3)]
    assert json.loads((tmp_path / "progress.json").read_text()) == {"done": 3, "total": 3}


def test_register_kind_checks_the_config_model() -> None:
    with pytest.raises(TypeError, match="Literal"):
        register_kind("other", CounterConfig, lambda c, ctx: [])
    with pytest.raises(ValueError, match="already registered"):
        register_kind("counter", CounterConfig, lambda c, ctx: [])


def test_atomic_writes_have_the_usual_permissions(tmp_path: Path) -> None:
    from irlhf.experiments.storage import atomic_write_text

    atomic_write_text(tmp_path / "x.txt", "hello")
    assert (tmp_path / "x.txt").stat().st_mode & 0o044 == 0o044  # group and others may read


def test_a_kinds_results_version_salts_the_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 1 is the plain hash of the resolved config (ids from before versions stay valid);
    a bumped version gives every config of the kind a new id, so older cached runs are not
    reused; other kinds are untouched."""
    import hashlib

    from irlhf.experiments import registry
    from irlhf.experiments.config import canonical_json

    config = CounterConfig(seed=3)
    plain = hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]
    assert run_hash(config) == plain
    kind = registry.get_kind("counter")
    monkeypatch.setitem(
        registry._KINDS, "counter", registry.Kind(kind.name, kind.config_model, kind.run, 2)
    )
    bumped = run_hash(config)
    assert bumped != plain and run_hash(config.model_dump()) == bumped
    assert run_hash(CounterConfig(seed=4)) not in (bumped, plain)
    with pytest.raises(ValueError, match="version"):
        register_kind("counter", CounterConfig, kind.run, version=0)
