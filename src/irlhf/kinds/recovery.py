"""The `recovery` experiment kind: a learner trained as the `imitation` kind trains it, then
probed for self-recovery (He et al. 2021; `irlhf.metrics.recovery.self_recovery`).

A run: world -> demonstrations (+ oracle) -> SFT / DAgger / GKD -> policy -> perturb k expert
tokens after `position` expert tokens, let the learner continue `horizon_after` steps -> excess
per-step regret and KL(expert || learner) against the unperturbed prefix at each distance d, the
perturbation's trace in the learner's own next-token distribution, and their recovery
half-lives with bootstrap intervals over prefixes. With `continuer = "expert"` nothing is
trained: the world's expert continues the prefixes (the reference: its excess KL is 0, its
trace and regret need not be). An undefined half-life (nothing
to recover from) is a note record, never a nan value; an infinite one (no recovery within D) is
+inf with a note. Neural learners are retrained on resume (no checkpoint: the probe's learners
are small).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator

from irlhf.experiments import RunContext, register_kind
from irlhf.kinds.common import FROZEN
from irlhf.kinds.imitation import ImitationConfig, train
from irlhf.kinds.world_spec import make_world
from irlhf.metrics.recovery import HalfLife, self_recovery
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy
from irlhf.worlds import AutomatonWorld


class ProbeSpec(BaseModel):
    """Where and how the expert prefix is perturbed, and how long the learner continues."""

    model_config = FROZEN
    position: int = Field(8, ge=0)
    """Expert tokens before the perturbation."""
    k: int = Field(1, ge=1)
    """Tokens replaced."""
    horizon_after: int = Field(64, ge=2)
    """Steps the learner continues after the perturbation (D)."""
    n_prefixes: int = Field(1000, ge=2)
    """Expert prefixes probed (each continued perturbed and unperturbed)."""
    perturbation: Literal["random", "unlikely"] = "unlikely"
    """"random" action tokens, or the expert's least likely token at each replaced position."""
    n_boot: int = Field(500, ge=10)
    """Bootstrap resamples over prefixes for the half-lives' intervals."""


class RecoveryConfig(BaseModel):
    """One self-recovery run (`kind = "recovery"`)."""

    model_config = FROZEN
    kind: Literal["recovery"] = "recovery"
    seed: int = 0
    """Seed of the learner's data and training (= `learner.seed`) and of the probe."""
    learner: ImitationConfig = ImitationConfig()
    """The learner: world, algorithm, policy, demonstrations and fits, as an imitation run."""
    probe: ProbeSpec = ProbeSpec()
    continuer: Literal["learner", "expert"] = "learner"
    """Who continues the prefixes: the learner `learner` trains, or the world's expert itself
    (the reference; `learner` then gives only the world)."""

    @model_validator(mode="after")
    def _one_seed(self) -> RecoveryConfig:
        if self.learner.seed != self.seed:
            raise ValueError(f"learner.seed ({self.learner.seed}) must equal seed ({self.seed})")
        return self


def _half_life_records(name: str, half_life: HalfLife | None) -> list[dict]:
    if half_life is None:  # nothing to recover from: the probe's notes say why
        return []
    return [
        {"metric": f"half_life_{name}", "value": half_life.value},
        {"metric": f"half_life_{name}_ci_low", "value": half_life.ci_low},
        {"metric": f"half_life_{name}_ci_high", "value": half_life.ci_high},
    ]


def run(config: RecoveryConfig, ctx: RunContext) -> list[dict]:
    world = make_world(config.learner.world)
    policy: TabularPolicy | Policy
    feedback: dict[str, int] = {}
    if config.continuer == "expert":
        policy = world.expert if isinstance(world, AutomatonWorld) else world.demonstrator()
    else:
        policy, feedback = train(config.learner, world, ctx)  # a neural learner ends in eval mode
    p = config.probe
    probe = self_recovery(
        world,
        policy,
        position=p.position,
        k=p.k,
        horizon_after=p.horizon_after,
        n_prefixes=p.n_prefixes,
        perturbation=p.perturbation,
        generator=torch.Generator().manual_seed(20_000 + config.seed),
        n_boot=p.n_boot,
    )
    records = [
        {"metric": name, "d": int(d), "value": float(v)}
        for name, values in (
            ("excess_regret", probe.excess_regret),
            ("excess_kl", probe.excess_kl),
            ("trace_kl", probe.trace_kl),
        )
        for d, v in zip(probe.distances, values, strict=True)
    ]
    records += _half_life_records("regret", probe.regret_half_life)
    records += _half_life_records("kl", probe.kl_half_life)
    records += _half_life_records("trace", probe.trace_half_life)
    records += [{"metric": "recovery_note", "value": 1.0, "note": note} for note in probe.notes]
    return records + [{"metric": k, "value": float(v)} for k, v in feedback.items()]


# version 2: the perturbation's trace (trace_kl, half_life_trace); continuer = "expert"
register_kind("recovery", RecoveryConfig, run, version=2)
