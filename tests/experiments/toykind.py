"""A toy experiment kind, "counter", for the platform's tests.

`steps` steps; step t draws 3 uniforms from a seeded torch.Generator and adds their sum, scaled
by world.scale, to a running total (plus `offset`). It checkpoints every `checkpoint_every` steps
(the generator state saved as a uint8 tensor), logs a training curve and can fail on one seed.
Environment knobs that do not change the numbers (so they are not part of the config):
$COUNTER_SLEEP seconds per step (to kill a run midway), $COUNTER_STOP_AT_STEP (raise StopHere
there, a crash without a process) and $COUNTER_MARKER_DIR (one marker file per call, to count
how often a run function really ran).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from irlhf.experiments import RunContext, register_kind

MARKER_ENV = "COUNTER_MARKER_DIR"
STOP_ENV = "COUNTER_STOP_AT_STEP"
SLEEP_ENV = "COUNTER_SLEEP"


class CounterWorld(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = Field(1.0, ge=0, le=1)
    """Multiplier of each step's draws."""
    mode: Literal["sum", "max"] = "sum"
    """How a step's three draws are reduced."""


class CounterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["counter"] = "counter"
    seed: int = Field(ge=0)
    steps: int = Field(20, ge=1, le=10_000)
    checkpoint_every: int = Field(5, ge=1)
    offset: float = Field(0.0, ge=-10, le=10)
    fail_on_seed: int | None = None
    world: CounterWorld = CounterWorld()


class StopHere(BaseException):
    """Simulates a crash mid-run (not an Exception, so run_one does not record a failure)."""


def _mark() -> None:
    marker_dir = os.environ.get(MARKER_ENV)
    if marker_dir:
        Path(marker_dir).mkdir(parents=True, exist_ok=True)
        (Path(marker_dir) / uuid.uuid4().hex).touch()


def run_counter(config: CounterConfig, ctx: RunContext) -> list[dict]:
    _mark()
    if config.fail_on_seed == config.seed:
        raise RuntimeError(f"deliberate failure at seed {config.seed}")
    generator = torch.Generator().manual_seed(config.seed)
    total = torch.zeros((), dtype=torch.float64)
    start = 0
    checkpoint = ctx.load_checkpoint()
    if checkpoint is not None:
        generator.set_state(checkpoint.tensors["rng"])
        total = checkpoint.tensors["total"]
        start = checkpoint.step
    stop_at = int(os.environ.get(STOP_ENV, "-1"))
    sleep = float(os.environ.get(SLEEP_ENV, "0"))
    for step in range(start, config.steps):
        if step == stop_at:
            raise StopHere(step)
        draws = torch.rand(3, generator=generator, dtype=torch.float64)
        reduced = draws.sum() if config.world.mode == "sum" else draws.max()
        total = total + config.world.scale * reduced
        ctx.log({"step": step + 1, "total": float(total)})
        time.sleep(sleep)
        if (step + 1) % config.checkpoint_every == 0:
            ctx.save_checkpoint(
                step + 1, {"rng": generator.get_state(), "total": total}, {"step": step + 1}
            )
    records = [{"metric": "total", "value": float(total) + config.offset}]
    records += [{"metric": "mean", "L": config.steps, "value": float(total) / config.steps}]
    return records


register_kind("counter", CounterConfig, run_counter)
