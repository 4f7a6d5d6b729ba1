"""Run directories: layout, status, caching, failures, record checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toykind import MARKER_ENV, CounterConfig

from irlhf.experiments import RunContext, register_kind, run_hash, run_id, run_one
from irlhf.experiments.run import normalize_records
from irlhf.experiments.storage import read_jsonl


def test_run_directory_layout(tmp_path: Path) -> None:
    config = CounterConfig(seed=1, steps=12, checkpoint_every=5)
    result = run_one(config, tmp_path)
    run_dir = tmp_path / "counter" / run_id(config)
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

    queue.put("started")
    result = run_one(Config(seed=seed, steps=10), Path(root))
    queue.put((result.status, result.skipped, result.records))


def test_a_second_process_waits_for_the_run_then_reads_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sweeps into one directory: while one process runs a run (holding its lock), another
    process given it waits, and then reads the finished run back instead of running it again.
    Deterministic: this process plays the first one (it takes the lock and runs the run)."""
    import multiprocessing
    import queue as queues

    from irlhf.experiments.run import LOCK_FILE, _run_unlocked, run_dir_of
    from irlhf.experiments.storage import exclusive_lock

    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    root, config = tmp_path / "runs", CounterConfig(seed=3, steps=10)
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    child = context.Process(target=_run_in_another_process, args=(3, str(root), messages))
    with exclusive_lock(run_dir_of(config, root) / LOCK_FILE):
        child.start()
        assert messages.get(timeout=120) == "started"
        with pytest.raises(queues.Empty):  # it waits for the lock ...
            messages.get(timeout=3.0)
        assert not (tmp_path / "markers").exists()  # ... without running the run
        mine = _run_unlocked(config, root)  # the first process runs it meanwhile
    status, skipped, records = messages.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert mine.status == status == "done" and skipped and records == mine.records
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


def test_samples(tmp_path: Path) -> None:
    ctx = RunContext(tmp_path, CounterConfig(seed=0))
    ctx.save_samples("greedy", [{"text": "a"}, {"text": "b"}])
    ctx.save_samples("greedy", [{"text": "c"}])
    assert read_jsonl(tmp_path / "samples" / "greedy.jsonl") == [{"text": "c"}]
    with pytest.raises(ValueError, match="sample name"):
        ctx.save_samples("../escape", [])


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
    import dataclasses
    import hashlib

    from irlhf.experiments import registry
    from irlhf.experiments.config import canonical_json

    config = CounterConfig(seed=3)
    plain = hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]
    assert run_hash(config, 1) == run_id(config) == plain
    kind = registry.get_kind("counter")
    assert kind.version == 1 and kind.module == "toykind"  # recorded by register_kind
    monkeypatch.setitem(registry._KINDS, "counter", dataclasses.replace(kind, version=2))
    bumped = run_id(config)
    assert bumped != plain and run_hash(config.model_dump(), 2) == bumped
    assert run_id(CounterConfig(seed=4)) not in (bumped, plain)
    with pytest.raises(ValueError, match="version"):
        register_kind("counter", CounterConfig, kind.run, version=0)


def test_a_filesystem_without_locks_runs_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where flock is refused (NFS without lockd: ENOLCK), a run still runs, with a warning."""
    import errno
    import fcntl

    def refuse(handle, operation) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.warns(UserWarning, match="does not support file locks"):
        result = run_one(CounterConfig(seed=4, steps=3), tmp_path)
    assert result.status == "done" and not result.skipped
