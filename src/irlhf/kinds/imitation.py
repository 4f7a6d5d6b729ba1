"""The `imitation` experiment kind: one learner (tabular or neural) trained by SFT, DAgger or GKD
in an automaton world or a neural LM world, then scored by the exposure metrics at every prefix
length.

A run: world -> Demonstrations (+ ExpertOracle for DAgger and GKD: the expert, or the
demonstrator itself) -> algorithm -> policy -> exposure metrics (exact for tables, Monte Carlo
for neural policies). Neural runs checkpoint the trained policy, so an interrupted run resumes
after training and ends with the same numbers. Inverse RL has its own kind, `irl`
(`irlhf.kinds.irl`).

In a neural LM world (`world.kind = "oracle"` or `"text"`, `irlhf.kinds.world_spec`) the
learner is a causal LM, the ExpertOracle is the expert LM itself (DAgger's mixture roll-outs and
labels, or GKD's soft labels with `algorithm = "gkd"`), and the exposure metrics are those of
Arora et al. (2022) with the expert as the oracle; `regret` is the gold-reward regret
J_L(expert) - J_L(model), a Monte-Carlo estimate on both sides. The run also records the
NLL-oracle of the learner's samples (`oracle_nll`, nats per token) and the Monte-Carlo returns
`j_expert` and `j_model` (with standard errors).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal, cast

import torch
from pydantic import BaseModel, Field, model_validator

from irlhf.algorithms.dagger import DAggerConfig, train_dagger
from irlhf.algorithms.gkd import GKDConfig, train_gkd
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.experiments import RunContext, register_kind
from irlhf.kinds.common import (
    FROZEN,
    DemoSpec,
    PolicySpec,
    build_policy,
    check_neural_world,
    collect_demonstrations,
    exposure_records,
    log_training,
    mc_return,
    model_state,
)
from irlhf.kinds.world_spec import WorldSpec, make_world
from irlhf.metrics.exposure import exact_return, exposure_bias, exposure_bias_mc
from irlhf.metrics.traps import trap_rates_mc
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy
from irlhf.types import Sequences
from irlhf.worlds import AutomatonSpec, AutomatonWorld, ExpertOracle
from irlhf.worlds.oracle import LMWorld

if TYPE_CHECKING:
    from irlhf.policies.causal_lm import CausalLMPolicy


class ImitationConfig(BaseModel):
    """One imitation run (`kind = "imitation"`)."""

    model_config = FROZEN
    kind: Literal["imitation"] = "imitation"
    seed: int = 0
    """Seed of the demonstrations, training and evaluation (the world has its own seed)."""
    world: WorldSpec = AutomatonSpec(preset="absorbing")
    """The world: an automaton (`preset = "absorbing"` plus any knob overrides), or a neural LM
    world (`kind = "oracle"` or `kind = "text"` plus its knobs)."""
    algorithm: Literal["sft", "dagger", "gkd"] = "sft"
    """"sft" (behaviour cloning), "dagger" (mixture roll-outs, aggregated hard or soft labels)
    or "gkd" (on-policy distillation: a neural student, `gkd`)."""
    policy: PolicySpec = PolicySpec()
    demonstrations: DemoSpec = DemoSpec()
    sft: SFTConfig = SFTConfig()
    """Behaviour-cloning fit (also round 0 of DAgger)."""
    dagger: DAggerConfig = DAggerConfig()
    """DAgger rounds and labels; `dagger.fit` is each round's refit."""
    gkd: GKDConfig = GKDConfig()
    """GKD's steps, lmbda, beta and sampling temperature."""
    oracle: Literal["expert", "demonstrator"] = "expert"
    """Whom DAgger's or GKD's oracle labels as: the expert, or the demonstrator itself (the
    demonstrations' temperature and epsilon: DAgger imitating the same demonstrator)."""
    mc_samples: int = Field(512, ge=2)
    """Neural: sampled sequences per Monte-Carlo exposure estimate."""

    @model_validator(mode="after")
    def _neural_world_needs_a_neural_learner(self) -> ImitationConfig:
        check_neural_world(self)
        if self.algorithm == "gkd" and self.policy.kind == "tabular":
            raise ValueError(
                'algorithm "gkd" needs policy.kind = "causal_lm" (a table\'s on-policy '
                'distillation is algorithm = "dagger" with dagger.labels = "soft")'
            )
        return self


def train(
    config: ImitationConfig, world: AutomatonWorld | LMWorld, ctx: RunContext | None = None
) -> tuple[TabularPolicy | CausalLMPolicy, dict[str, int]]:
    """Demonstrations -> SFT, DAgger or GKD. Returns (policy, feedback used)."""
    generator = torch.Generator().manual_seed(config.seed)
    demos = collect_demonstrations(config, world, generator)
    policy = build_policy(config, world)
    d = config.demonstrations
    if config.oracle == "expert":
        oracle = ExpertOracle(world)
    else:
        oracle = ExpertOracle(world, temperature=d.temperature, epsilon=d.epsilon)
    dynamics = world.dynamics()
    if config.algorithm == "sft":
        trained = train_sft(policy, demos, dynamics, config.sft, generator)
    elif config.algorithm == "dagger":
        trained = train_dagger(policy, demos, oracle, dynamics, config.dagger, generator)
    else:
        trained = train_gkd(policy, demos, oracle, dynamics, config.gkd, generator)
    policy = trained.policy
    if ctx is not None:
        log_training(ctx, trained.records)
    feedback = {"demo_tokens": demos.n_tokens, "oracle_queries": oracle.queries}
    return policy, feedback | {"optimizer_steps": optimizer_steps(config)}


def optimizer_steps(config: ImitationConfig) -> int:
    """The optimiser steps a neural learner takes (0 for a table: counts, no optimiser)."""
    if config.policy.kind == "tabular":
        return 0
    if config.algorithm == "sft":
        return config.sft.steps
    if config.algorithm == "dagger":
        return (config.dagger.rounds + 1) * config.dagger.fit.steps
    return config.gkd.steps


def run(config: ImitationConfig, ctx: RunContext) -> list[dict]:
    world = make_world(config.world)
    started = time.perf_counter()
    neural = config.policy.kind != "tabular"
    checkpoint = ctx.load_checkpoint() if neural else None
    if checkpoint is not None:
        policy = build_policy(config, world)
        cast("CausalLMPolicy", policy).model.load_state_dict(checkpoint.tensors)
        feedback = {k: checkpoint.meta[k] for k in ("demo_tokens", "oracle_queries")}
        feedback["optimizer_steps"] = optimizer_steps(config)
    else:
        policy, feedback = train(config, world, ctx)
        if neural:
            ctx.save_checkpoint(1, model_state(cast("CausalLMPolicy", policy)), feedback)
    train_seconds = time.perf_counter() - started

    if neural:
        policy = cast("CausalLMPolicy", policy).eval()
        generator = torch.Generator().manual_seed(config.seed + 10_000)
        rollouts = TrapRollouts()
        exposure = exposure_bias_mc(world, policy, config.mc_samples, generator, observe=rollouts)
    else:
        exposure = exposure_bias(cast(AutomatonWorld, world), cast(TabularPolicy, policy))
    records = exposure_records(exposure)
    if isinstance(world, AutomatonWorld):
        records.append({"metric": "j_expert", "value": exact_return(world, world.expert)})
        if neural:
            records += rollouts.records(world)
    else:
        records += lm_world_records(world, policy, config.mc_samples, generator)
    records += [
        {"metric": "train_seconds", "value": train_seconds},
        *({"metric": k, "value": float(v)} for k, v in feedback.items()),
    ]
    if not neural:
        j_model = exact_return(cast(AutomatonWorld, world), cast(TabularPolicy, policy))
        records.append({"metric": "j_model", "value": j_model})
    return records


TRAP_FIELDS = ("entry_rate", "exit_rate", "trap_cost", "good_shortfall", "first_step_entry_rate")


class TrapRollouts:
    """Collects a neural learner's own roll-outs and next-token distributions as
    `exposure_bias_mc` scores them (its `observe` hook), so its trap rates come from the same
    samples as its regret instead of a second sampling pass."""

    def __init__(self) -> None:
        self.seqs: list[Sequences] = []
        self.probs: list[torch.Tensor] = []

    def __call__(self, seqs: Sequences, probs: torch.Tensor) -> None:
        self.seqs.append(seqs)
        self.probs.append(probs)

    def records(self, world: AutomatonWorld) -> list[dict]:
        """The trap-entry and trap-exit rates (and costs) of the collected roll-outs
        (`irlhf.metrics.traps.trap_rates_mc`); an undefined rate (no roll-out entered a trap)
        is a `trap_note` record, never a nan."""
        try:
            rates = trap_rates_mc(world, Sequences.concat(self.seqs), torch.cat(self.probs))
        except UndefinedMetric as error:
            return [{"metric": "trap_note", "value": 1.0, "note": str(error)}]
        return [{"metric": f"trap_{k}", "value": getattr(rates, k)} for k in TRAP_FIELDS]


def lm_world_records(
    world: LMWorld, policy: TabularPolicy | Policy, n: int, generator: torch.Generator
) -> list[dict]:
    """Monte-Carlo scores in a neural world: the true return of the expert and of the model
    (with standard errors) and the NLL-oracle of the model's samples (Yu et al. 2017)."""
    records = []
    for name, source in (("expert", world.demonstrator()), ("model", policy)):
        mean, se, seqs = mc_return(world, source, n, generator)
        records += [
            {"metric": f"j_{name}", "value": mean},
            {"metric": f"j_{name}_se", "value": se},
        ]
    records.append({"metric": "oracle_nll", "value": float(world.oracle_nll(seqs).mean())})
    return records


# version 2: neural DAgger's AdamW uses SFTConfig.weight_decay (was torch's default 0.01)
# version 3: DAgger rolls out the per-step mixture (was: re-drawn demonstrations), GKD is its own
# algorithm, the oracle's hard labels are drawn only where charged
# version 4: neural DAgger's mixture roll-outs use the learner's KV-cached sampler (`steer`;
# another random stream, and linear instead of quadratic in the horizon); policy.act_epsilon
# version 5: a neural learner's trap rates come from its exposure roll-outs (was a second set)
register_kind("imitation", ImitationConfig, run, version=5)
