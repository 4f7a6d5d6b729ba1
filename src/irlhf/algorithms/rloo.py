"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024, "Back to Basics:
Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs"; Kool et al.
2019), with TRL's RLOOTrainer semantics so that the two can be benchmarked like for like.

Each iteration samples k completions y_i1..y_ik of each prompt x_i and gives each a sequence
reward with the KL penalty summed over its tokens (`policy_gradient.rollout`):

    R_ij = score(x_i, y_ij) - beta sum_t kl_ijt
    A_ij = R_ij - (1 / (k - 1)) sum_{l != j} R_il                  (`losses.rloo_advantages`)

The whole completion is one action. The loss is PPO's clipped surrogate on the *sequence*
ratio rho_ij = pi(y_ij | x_i) / pi_old(y_ij | x_i) (`losses.ppo_clip` on summed log-probs),
averaged over sequences, exactly TRL's RLOO:

    L = -mean_ij min(rho_ij A_ij, clip(rho_ij, 1 - eps, 1 + eps) A_ij)

With the default single epoch and one minibatch rho = 1, and the gradient is the REINFORCE
estimator with the leave-one-out baseline, -mean_ij A_ij grad log pi(y_ij | x_i), the RLOO of
the paper; more epochs or minibatches give the clipped multi-step variant (TRL's
`num_iterations` > 1). Advantages are not normalised (TRL's default).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from irlhf import losses
from irlhf.algorithms import policy_gradient as pg
from irlhf.algorithms.optim import adamw
from irlhf.policies.causal_lm import CausalLMPolicy


class RLOOConfig(pg.PolicyGradientConfig):
    """RLOO against a given score with a KL penalty (the `[rloo]` table of a config)."""

    samples_per_prompt: int = Field(4, ge=2)
    """k completions per prompt (the leave-one-out baseline needs k >= 2)."""


def rloo_loss(
    policy: CausalLMPolicy, config: RLOOConfig, minibatch: dict[str, Any]
) -> tuple[Tensor, pg.Metrics]:
    """Clipped surrogate on sequence log-prob ratios (REINFORCE when the ratio is 1)."""
    log_probs, _ = pg.forward(policy, minibatch["sequences"], config.temperature)  # (B, T)
    return losses.ppo_clip(
        log_probs.sum(1), minibatch["old_log_probs"], minibatch["advantages"], config.clip_eps
    )


def train_rloo(
    policy: CausalLMPolicy,
    score: pg.ScoreFn,
    prompts: pg.PromptSampler,
    config: RLOOConfig = RLOOConfig(),
    reference: CausalLMPolicy | None = None,
    generator: torch.Generator | None = None,
) -> tuple[CausalLMPolicy, list[dict[str, float]]]:
    """Optimise `policy` in place against `score` with a KL penalty to `reference` (default: a
    frozen copy of the starting policy; none when kl_coef = 0). `prompts(n, generator)` draws
    prompts, e.g. `world.dynamics().sample_prompts`. Returns (policy, one record per iteration).
    """
    generator = generator or torch.Generator().manual_seed(0)
    if reference is None and config.kl_coef > 0:
        reference = pg.frozen_reference(policy)
    optimizer = adamw(policy.parameters(), config.lr, config.weight_decay)  # fused update
    loss_fn = partial(rloo_loss, policy, config)
    n, k = config.prompts_per_iteration, config.samples_per_prompt
    policy.eval()  # dropout off: the sampler's log-probs are pi_old's
    records = []
    for iteration in range(config.iterations):
        start = time.perf_counter()
        # 1. rollout: k completions per prompt, scored, KL-shaped
        prompt_batch = pg.sample_prompt_groups(prompts, n, k, generator)  # (n * k, P)
        batch, rollout_metrics = pg.rollout(
            policy,
            reference,
            score,
            prompt_batch,
            config.max_new_tokens,
            generator,
            config.kl_coef,
            config.kl_estimator,
            config.temperature,
        )
        # 2. advantages: leave-one-out baseline among the k samples of each prompt
        advantages, advantage_metrics = losses.rloo_advantages(batch.rewards.sum(1).view(n, k))
        # 3. update: minibatch epochs of the sequence-level clipped surrogate
        data = {
            "sequences": batch.sequences,
            "old_log_probs": batch.log_probs.sum(1),  # (n * k,)
            "advantages": advantages.flatten(),  # (n * k,), row i*k + j = prompt i, sample j
        }
        steps, stopped = pg.update(
            optimizer,
            data,
            loss_fn,
            config.epochs,
            config.minibatch_size,
            generator,
            config.max_grad_norm,
            config.target_kl,
        )
        records.append(
            {
                "iteration": iteration,
                **rollout_metrics,
                **advantage_metrics,
                **pg.summarize(steps, stopped),
                "time/iteration_s": time.perf_counter() - start,
            }
        )
    return policy, records
