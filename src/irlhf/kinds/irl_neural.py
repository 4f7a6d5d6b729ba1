"""The neural half of the `irl` kind (`irlhf.kinds.irl` runs it for a neural learner): a causal-LM
learner (tokens only) trained by neural GAIL, AIRL or IQ-Learn in an automaton world, scored like
the neural `imitation` kind.

A run: world -> Demonstrations -> optional behaviour-cloning warm start (`pretrain`, 0 steps =
the random network, the neural analogue of the tabular methods' uniform start) -> the method ->
Monte-Carlo exposure records (regret, eps, R, AccErr, %ExAccErr per L, with standard errors),
`j_model` by Monte Carlo (J(expert) minus the Monte-Carlo regret at the horizon, with
`j_model_se`), the exact returns of the expert and the demonstrator, and the learner's trap-entry
and trap-exit rates from its own roll-outs (`trap_entry_rate`, `trap_exit_rate`, ...; a
`trap_note` when no roll-out enters a trap), as the neural `imitation` kind records them
(`irlhf.kinds.imitation.TrapRollouts`).

Recovered reward: the tabular kind's advantage correlation and reward transfer need a reward
table over latent states, which a reward network over prefixes does not give cheaply, so they are
not computed here. Instead the run records the Pearson correlation of the recovered per-token
reward (GAIL: its policy reward; AIRL: g; IQ-Learn: Q - gamma V(s')) with the true per-token
reward on fresh demonstrator sequences (`irl/reward_corr_demo`) and on the learner's own
(`irl/reward_corr_learner`); nan when either is constant. A raw per-token correlation is not
invariant to potential shaping, so a shaped reward (AIRL's g can absorb shaping; IQ-Learn's r
does) may correlate weakly even when it induces the right policy. Read it as a diagnostic.

The trained policy and these reward metrics are checkpointed, so an interrupted run resumes after
training and ends with the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from irlhf.algorithms.neural_adversarial_irl import (
    NeuralAdversarialIRLConfig,
    TokenDiscriminator,
    train_neural_airl,
    train_neural_gail,
)
from irlhf.algorithms.neural_iq_learn import train_neural_iq_learn
from irlhf.algorithms.result import Trained
from irlhf.algorithms.sft import train_sft
from irlhf.experiments import RunContext
from irlhf.kinds.common import (
    build_policy,
    collect_demonstrations,
    exposure_records,
    log_training,
    model_state,
)
from irlhf.kinds.imitation import TrapRollouts
from irlhf.kinds.irl_config import IRLConfig, feedback_of, irl_world
from irlhf.metrics.exposure import exact_return, exposure_bias_mc
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences
from irlhf.worlds import AutomatonWorld

RewardFn = Callable[[Sequences], Tensor]
"""seqs -> [B, T] recovered reward per completion token."""


def recovered_reward(learned: TokenDiscriminator | RewardFn) -> RewardFn:
    """What a neural IRL method learned, as a reward: a discriminator's recovered reward, or
    IQ-Learn's implied reward as it is."""
    return learned.recovered_reward if isinstance(learned, TokenDiscriminator) else learned


def _adversarial_rollouts(config: NeuralAdversarialIRLConfig) -> int:
    step = config.policy_step
    per_round = step.iterations * step.prompts_per_iteration * step.samples_per_prompt
    return config.rounds * (config.rollouts_per_round + per_round)


@dataclass(frozen=True)
class NeuralIRLMethod:
    """How to train one neural IRL method and count its rollouts."""

    train: Callable[..., Trained[CausalLMPolicy, TokenDiscriminator | RewardFn]]
    """(policy, demos, dynamics, config, generator) -> the policy, its records and what it
    learned (`recovered_reward` reads it as a reward)."""
    rollouts: Callable[[Any], int]
    """config -> learner sequences sampled during training (0 = offline)."""


NEURAL_METHODS: dict[str, NeuralIRLMethod] = {
    "gail": NeuralIRLMethod(train_neural_gail, _adversarial_rollouts),
    "airl": NeuralIRLMethod(train_neural_airl, _adversarial_rollouts),
    "iq_learn": NeuralIRLMethod(
        train_neural_iq_learn, lambda c: c.rounds * c.rollouts_per_round if c.online else 0
    ),
}


def train(
    config: IRLConfig, world: AutomatonWorld, ctx: RunContext | None = None
) -> tuple[CausalLMPolicy, RewardFn, dict[str, float]]:
    """Demonstrations -> BC warm start -> the method. Returns (policy, recovered reward,
    feedback)."""
    generator = torch.Generator().manual_seed(config.seed)
    demos = collect_demonstrations(config, world, generator)
    policy = build_policy(config, world)
    dynamics = world.dynamics()
    if config.pretrain.steps > 0:
        bc = train_sft(policy, demos, dynamics, config.pretrain, generator)
        policy = bc.policy
        if ctx is not None:
            log_training(ctx, [{"phase": "pretrain", **r} for r in bc.records], limit=50)
    method = NEURAL_METHODS[config.algorithm]
    trained = method.train(policy, demos, dynamics, config.method, generator)
    policy = trained.policy
    policy.eval()
    if ctx is not None:
        log_training(ctx, trained.records)
    return (
        policy,
        recovered_reward(trained.learned),
        feedback_of(demos, method.rollouts(config.method)),
    )


def _pearson(x: Tensor, y: Tensor) -> float:
    a, b = x.double().cpu().numpy(), y.double().cpu().numpy()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def reward_metrics(
    config: IRLConfig, world: AutomatonWorld, policy: CausalLMPolicy, reward: RewardFn
) -> dict[str, float]:
    """Per-token correlation of the recovered reward with the true one, on fresh demonstrator
    and learner sequences (metric side: reads the truth)."""
    generator = torch.Generator().manual_seed(config.seed + 20_000)
    n = min(config.mc_samples, 256)
    d = config.demonstrations
    demonstrator = world.demonstrator(d.temperature, d.epsilon)
    samples = {
        "demo": world.rollout(demonstrator, n, generator),
        "learner": policy.sample(world.sample_prompts(n, generator), world.horizon, generator),
    }
    metrics = {}
    for name, seqs in samples.items():
        seqs = seqs.to("cpu")
        mask = seqs.completion_mask
        with torch.inference_mode():
            recovered = reward(seqs).cpu()
        metrics[f"irl/reward_corr_{name}"] = _pearson(
            recovered[mask], world.true_rewards(seqs)[mask]
        )
    return metrics


def run(config: IRLConfig, ctx: RunContext) -> list[dict]:
    """The neural `irl` run (see the module docstring for the records)."""
    world = irl_world(config)
    started = time.perf_counter()
    checkpoint = ctx.load_checkpoint()
    if checkpoint is not None:
        policy = cast(CausalLMPolicy, build_policy(config, world))
        policy.model.load_state_dict(checkpoint.tensors)
        policy.eval()
        scalars = dict(checkpoint.meta)
    else:
        policy, reward, feedback = train(config, world, ctx)
        scalars = {**feedback, **reward_metrics(config, world, policy, reward)}
        ctx.save_checkpoint(1, model_state(policy), scalars)
    train_seconds = time.perf_counter() - started

    generator = torch.Generator().manual_seed(config.seed + 10_000)
    rollouts = TrapRollouts()
    exposure = exposure_bias_mc(world, policy, config.mc_samples, generator, observe=rollouts)
    j_expert = exact_return(world, world.expert)
    d = config.demonstrations
    j_demonstrator = exact_return(world, world.demonstrator(d.temperature, d.epsilon))
    assert exposure.regret_se is not None  # Monte Carlo
    records = exposure_records(exposure)
    records += rollouts.records(world)
    records += [
        {"metric": "j_model", "value": j_expert - float(exposure.regret[-1])},
        {"metric": "j_model_se", "value": float(exposure.regret_se[-1])},
        {"metric": "j_expert", "value": j_expert},
        {"metric": "j_demonstrator", "value": j_demonstrator},
        {"metric": "train_seconds", "value": train_seconds},
        # sorted: the checkpoint's meta comes back key-sorted
        *({"metric": k, "value": float(v)} for k, v in sorted(scalars.items())),
    ]
    return records
