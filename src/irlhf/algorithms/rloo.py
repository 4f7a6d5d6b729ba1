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
`num_iterations` > 1). Advantages are not normalised (TRL's default). The loop (rollout, update)
is `policy_gradient.train`, shared with PPO; RLOO brings `rloo_batch` and `rloo_loss`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from irlhf import losses
from irlhf.algorithms import policy_gradient as pg
from irlhf.algorithms.optim import adamw
from irlhf.algorithms.result import Trained
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


def rloo_batch(config: RLOOConfig, batch: pg.Rollout) -> tuple[dict[str, Any], pg.Metrics]:
    """Sequence rewards (summed over tokens) minus the leave-one-out baseline among the k samples
    of each prompt: the update's batch of sequence log-probs and advantages, and the metrics."""
    n, k = config.prompts_per_iteration, config.samples_per_prompt
    advantages, metrics = losses.rloo_advantages(batch.rewards.sum(1).view(n, k))
    data = {
        "sequences": batch.sequences,
        "old_log_probs": batch.log_probs.sum(1),  # (n * k,)
        "advantages": advantages.flatten(),  # (n * k,), row i*k + j = prompt i, sample j
    }
    return data, metrics


def train_rloo(
    policy: CausalLMPolicy,
    score: pg.ScoreFn,
    prompts: pg.PromptSampler,
    config: RLOOConfig = RLOOConfig(),
    reference: CausalLMPolicy | None = None,
    generator: torch.Generator | None = None,
) -> Trained[CausalLMPolicy, None]:
    """Optimise `policy` in place against `score` with a KL penalty to `reference` (default: a
    frozen copy of the starting policy; none when kl_coef = 0). `prompts(n, generator)` draws
    prompts, e.g. `world.dynamics().sample_prompts`. Returns the policy and one record per
    iteration.
    """
    optimizer = adamw(policy.parameters(), config.lr, config.weight_decay)  # fused update
    loss_fn = partial(rloo_loss, policy, config)
    make_batch = partial(rloo_batch, config)
    records = pg.train(
        policy, score, prompts, config, optimizer, loss_fn, make_batch, reference, generator
    )
    return Trained(policy, records, None)
