"""The `imitation` experiment kind: one learner (tabular or neural) trained by SFT or DAgger in an
automaton world, then scored by the exposure metrics at every prefix length.

A run: world -> Demonstrations (+ ExpertOracle for DAgger: the expert, or the demonstrator
itself) -> algorithm -> policy -> exposure metrics (exact for tables, Monte Carlo for neural
policies). Neural runs checkpoint the trained policy, so an interrupted run resumes after training
and ends with the same numbers. Inverse RL has its own kind, `irl` (`irlhf.studies.irl`).
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from irlhf.algorithms.dagger import DAggerConfig, train_dagger
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.experiments import RunContext, register_kind
from irlhf.metrics.exposure import ExposureBias, exact_return, exposure_bias, exposure_bias_mc
from irlhf.policies.tabular import TabularPolicy
from irlhf.worlds import AutomatonSpec, AutomatonWorld, Demonstrations, ExpertOracle

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class PolicySpec(BaseModel):
    """The learner: a table over latent states, or a tiny causal LM that sees tokens only."""

    model_config = _FROZEN
    kind: Literal["tabular", "causal_lm"] = "tabular"
    """"tabular" (exact metrics) or "causal_lm" (a tiny transformer, Monte-Carlo metrics)."""
    arch: Literal["gpt2", "llama"] = "gpt2"
    """Neural architecture."""
    n_layer: int = Field(2, ge=1)
    """Neural: transformer blocks."""
    n_embd: int = Field(64, ge=8)
    """Neural: width."""
    n_head: int = Field(4, ge=1)
    """Neural: attention heads (must divide n_embd)."""


class DemoSpec(BaseModel):
    """The demonstrations: how many, and how suboptimal the demonstrator is."""

    model_config = _FROZEN
    n: int = Field(50, ge=1)
    """Number of demonstration sequences (each `world.horizon` tokens long)."""
    temperature: float = Field(1.0, ge=0.0)
    """Demonstrator = expert at this sampling temperature (0 = greedy)."""
    epsilon: float = Field(0.0, ge=0.0, le=1.0)
    """... mixed with uniform noise with this weight."""


class ImitationConfig(BaseModel):
    """One imitation run (`kind = "imitation"`)."""

    model_config = _FROZEN
    kind: Literal["imitation"] = "imitation"
    seed: int = 0
    """Seed of the demonstrations, training and evaluation (the world has its own seed)."""
    world: AutomatonSpec = AutomatonSpec(preset="absorbing")
    """The automaton world (`preset = "absorbing"` plus any knob overrides)."""
    algorithm: Literal["sft", "dagger"] = "sft"
    """"sft" (behaviour cloning) or "dagger" (hard labels; soft labels = on-policy distillation)."""
    policy: PolicySpec = PolicySpec()
    demonstrations: DemoSpec = DemoSpec()
    sft: SFTConfig = SFTConfig()
    """Behaviour-cloning fit (also round 0 of DAgger)."""
    dagger: DAggerConfig = DAggerConfig()
    """DAgger rounds and labels; `dagger.fit` is each round's refit."""
    oracle: Literal["expert", "demonstrator"] = "expert"
    """Whom DAgger's oracle labels as: the expert, or the demonstrator itself (the
    demonstrations' temperature and epsilon: DAgger imitating the same demonstrator)."""
    mc_samples: int = Field(512, ge=2)
    """Neural: sampled sequences per Monte-Carlo exposure estimate."""


def build_policy(config: ImitationConfig, world: AutomatonWorld):
    """A blank learner of the configured kind."""
    if config.policy.kind == "tabular":
        return TabularPolicy.uniform(world.n_states, world.vocab_size)
    from irlhf.policies.causal_lm import CausalLMPolicy, default_device

    p = config.policy
    if p.n_embd % p.n_head:
        raise ValueError(f"policy.n_head ({p.n_head}) must divide policy.n_embd ({p.n_embd})")
    policy = CausalLMPolicy.tiny(
        world.token_vocab_size,
        action_vocab_size=world.vocab_size,
        n_layer=p.n_layer,
        n_embd=p.n_embd,
        n_head=p.n_head,
        max_length=world.horizon + 1,
        arch=p.arch,
        seed=config.seed,
    )
    return policy.to(default_device())


def train(config: ImitationConfig, world: AutomatonWorld, ctx: RunContext | None = None):
    """Demonstrations -> SFT or DAgger. Returns (policy, feedback used)."""
    generator = torch.Generator().manual_seed(config.seed)
    d = config.demonstrations
    demos = Demonstrations.collect(world, d.n, generator, d.temperature, d.epsilon)
    policy = build_policy(config, world)
    if config.oracle == "expert":
        oracle = ExpertOracle(world)
    else:
        oracle = ExpertOracle(world, temperature=d.temperature, epsilon=d.epsilon)
    if config.algorithm == "sft":
        policy, records = train_sft(policy, demos, world.dynamics(), config.sft, generator)
    else:
        dagger = config.dagger
        policy, records = train_dagger(policy, demos, oracle, world.dynamics(), dagger, generator)
    if ctx is not None:
        log_training(ctx, records)
    return policy, {"demo_tokens": demos.n_tokens, "oracle_queries": oracle.queries}


def run(config: ImitationConfig, ctx: RunContext) -> list[dict]:
    world = AutomatonWorld(config.world)
    started = time.perf_counter()
    neural = config.policy.kind != "tabular"
    checkpoint = ctx.load_checkpoint() if neural else None
    if checkpoint is not None:
        policy = build_policy(config, world)
        policy.model.load_state_dict(checkpoint.tensors)
        feedback = {k: checkpoint.meta[k] for k in ("demo_tokens", "oracle_queries")}
    else:
        policy, feedback = train(config, world, ctx)
        if neural:
            state = {k: v.detach().cpu().contiguous() for k, v in policy.model.state_dict().items()}
            ctx.save_checkpoint(1, state, feedback)
    train_seconds = time.perf_counter() - started

    if neural:
        generator = torch.Generator().manual_seed(config.seed + 10_000)
        exposure = exposure_bias_mc(world, policy, config.mc_samples, generator)
    else:
        exposure = exposure_bias(world, policy)
    records = exposure_records(exposure)
    records += [
        {"metric": "j_expert", "value": exact_return(world, world.expert)},
        {"metric": "train_seconds", "value": train_seconds},
        *({"metric": k, "value": float(v)} for k, v in feedback.items()),
    ]
    if not neural:
        records.append({"metric": "j_model", "value": exact_return(world, policy)})
    return records


def log_training(ctx: RunContext, records: list[dict], limit: int = 200) -> None:
    """Log about `limit` of a training loop's records, evenly spaced (the last one included)."""
    step = max(1, len(records) // limit)
    picked = records[::step]
    if records and (len(records) - 1) % step:
        picked.append(records[-1])
    for record in picked:
        ctx.log(record)


def exposure_records(exposure: ExposureBias) -> list[dict]:
    """One record per metric and prefix length L."""
    series = {
        "regret": exposure.regret,
        "eps": exposure.eps,
        "R": exposure.R,
        "acc_err": exposure.acc_err,
        "pct_ex_acc_err": exposure.pct_ex_acc_err,
    }
    if exposure.regret_se is not None:
        series["regret_se"] = exposure.regret_se
        series["R_se"] = exposure.R_se
    return [
        {"metric": name, "L": int(L), "value": float(v)}
        for name, values in series.items()
        for L, v in zip(exposure.lengths, values, strict=True)
    ]


register_kind("imitation", ImitationConfig, run)
