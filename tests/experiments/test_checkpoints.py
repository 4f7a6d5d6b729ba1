"""Checkpoints: safetensors round trip, keep-last-two, and recovery from damaged files."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from toykind import STOP_ENV, CounterConfig, StopHere

from irlhf.experiments import CheckpointWarning, run_one
from irlhf.experiments.checkpoint import list_checkpoints, load_latest, write_checkpoint
from irlhf.experiments.storage import read_jsonl


def test_round_trip_keeps_tensors_meta_and_step(tmp_path: Path) -> None:
    tensors = {
        "w": torch.randn(3, 4),
        "half": torch.randn(5).to(torch.bfloat16),
        "rng": torch.Generator().manual_seed(0).get_state(),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
        "view": torch.arange(10)[::2],  # non-contiguous
    }
    tensors["tied"] = tensors["w"]  # shared storage, as tied embeddings
    write_checkpoint(tmp_path, 7, tensors, {"round": 2, "note": "ok"}, log_lines=11)
    checkpoint = load_latest(tmp_path)
    assert checkpoint is not None and checkpoint.step == 7 and checkpoint.log_lines == 11
    assert checkpoint.meta == {"round": 2, "note": "ok"}
    for name, tensor in tensors.items():
        assert torch.equal(checkpoint.tensors[name], tensor), name
        assert checkpoint.tensors[name].dtype == tensor.dtype


def test_keeps_the_last_two(tmp_path: Path) -> None:
    for step in (1, 2, 3, 10):
        write_checkpoint(tmp_path, step, {"x": torch.full((2,), float(step))}, {})
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_0000000003.safetensors",
        "step_0000000010.safetensors",
    ]
    assert load_latest(tmp_path).step == 10


def test_meta_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        write_checkpoint(tmp_path, 1, {}, {"bad": object()})


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data: only the digest notices
    path.write_bytes(bytes(data))


def garbage_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(b"\xff" * 16 + data[16:])


def interrupted_run(root: Path, monkeypatch: pytest.MonkeyPatch, config: CounterConfig) -> Path:
    """Run until step 13 and crash: checkpoints at 5 and 10 remain."""
    monkeypatch.setenv(STOP_ENV, "13")
    with pytest.raises(StopHere):
        run_one(config, root)
    monkeypatch.delenv(STOP_ENV)
    return next((root / "counter").iterdir())


@pytest.mark.parametrize("damage", [truncate, flip_last_byte, garbage_header])
def test_damaged_newest_checkpoint_falls_back_and_ends_with_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Callable[[Path], None]
) -> None:
    config = CounterConfig(seed=5, steps=20, checkpoint_every=5)
    reference = run_one(config, tmp_path / "reference")
    run_dir = interrupted_run(tmp_path / "runs", monkeypatch, config)
    newest = list_checkpoints(run_dir / "checkpoints")[-1]
    assert newest.name == "step_0000000010.safetensors"
    damage(newest)
    with pytest.warns(CheckpointWarning, match="step_0000000010.safetensors"):
        resumed = run_one(config, tmp_path / "runs")
    assert resumed.records == reference.records
    assert read_jsonl(run_dir / "metrics_log.jsonl") == read_jsonl(
        reference.run_dir / "metrics_log.jsonl"
    )
    assert (run_dir / "checkpoints" / (newest.name + ".corrupt")).exists()


def test_every_checkpoint_damaged_restarts_from_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = CounterConfig(seed=6, steps=20, checkpoint_every=5)
    reference = run_one(config, tmp_path / "reference")
    run_dir = interrupted_run(tmp_path / "runs", monkeypatch, config)
    for path in list_checkpoints(run_dir / "checkpoints"):
        truncate(path)
    with pytest.warns(CheckpointWarning) as warned:
        resumed = run_one(config, tmp_path / "runs")
    assert len(warned) == 2
    assert resumed.records == reference.records


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_checkpoint(tmp_path, 3, {"x": torch.ones(2)}, {"a": 1})

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("checkpoint loading must not unpickle")

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert load_latest(tmp_path).meta == {"a": 1}
