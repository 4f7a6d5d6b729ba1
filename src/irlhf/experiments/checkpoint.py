"""Checkpoints as safetensors files: atomic to write, verified to read, never unpickled.

A checkpoint is ``checkpoints/step_<step>.safetensors`` in a run directory. Its header metadata
holds the run's JSON `meta`, the step, the number of training-curve lines logged so far (so that a
resumed run can cut the curve back to the checkpoint) and a sha256 digest of the tensor bytes.
Reading goes through `safetensors.torch.load_file` (no pickle, no code execution); a file that fails
to parse or whose digest does not match is reported with a `CheckpointWarning`, renamed to
``*.corrupt`` and skipped, so the run resumes from the previous good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from irlhf.experiments.storage import atomic_write_bytes

if TYPE_CHECKING:  # torch is imported when a checkpoint is touched, not with the platform
    import torch

KEEP_LAST = 2
_NAME = re.compile(r"^step_(\d+)\.safetensors$")
_META, _STEP, _LOG_LINES, _DIGEST = "irlhf.meta", "irlhf.step", "irlhf.log_lines", "irlhf.sha256"


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used (corrupted or truncated) and was skipped."""


class CheckpointError(Exception):
    """A checkpoint file is unreadable or does not match its digest."""


@dataclass(frozen=True)
class Checkpoint:
    """A training state: tensors, JSON metadata and the step it was taken after."""

    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path
    log_lines: int = 0  # lines of metrics_log.jsonl written when it was taken


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:010d}.safetensors"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in `directory`, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, in name order."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cpu_copies(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU copies (clones also untie shared storage, which safetensors
    refuses, e.g. tied embedding weights)."""
    import torch

    copies = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"checkpoint tensors must map str -> Tensor (got {name!r})")
        copies[name] = tensor.detach().to("cpu").clone().contiguous()
    return copies


def write_checkpoint(
    directory: Path,
    step: int,
    tensors: Mapping[str, torch.Tensor],
    meta: dict[str, Any],
    log_lines: int = 0,
    keep: int = KEEP_LAST,
) -> Path:
    """Write a checkpoint atomically and delete all but the newest `keep` ones."""
    from safetensors.torch import save

    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint step must be an int >= 0 (got {step!r})")
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"checkpoint meta must be JSON-able: {err}") from None
    copies = _cpu_copies(tensors)
    metadata = {
        _META: meta_json,
        _STEP: str(step),
        _LOG_LINES: str(log_lines),
        _DIGEST: _digest(copies),
    }
    path = checkpoint_path(directory, step)
    atomic_write_bytes(path, save(copies, metadata=metadata))
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint; CheckpointError if it is damaged in any way."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        step, log_lines = int(metadata[_STEP]), int(metadata[_LOG_LINES])
        meta = json.loads(metadata[_META])
    except Exception as err:  # safetensors, KeyError, ValueError: all mean "damaged"
        raise CheckpointError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if _digest(tensors) != metadata.get(_DIGEST):
        raise CheckpointError(f"{path}: tensor bytes do not match the stored sha256 digest")
    return Checkpoint(step=step, tensors=tensors, meta=meta, path=Path(path), log_lines=log_lines)


def load_latest(directory: Path) -> Checkpoint | None:
    """The newest good checkpoint in `directory`; damaged newer ones are warned about, renamed
    to ``*.corrupt`` (kept for inspection, never read again) and skipped."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return read_checkpoint(path)
        except CheckpointError as err:
            quarantined = path.with_name(path.name + ".corrupt")
            path.replace(quarantined)
            warnings.warn(
                f"{err}; moved to {quarantined.name}; falling back to the previous checkpoint "
                "(or to the start if there is none)",
                CheckpointWarning,
                stacklevel=2,
            )
    return None
