"""PPO for RLHF (Schulman et al. 2017, "Proximal Policy Optimization Algorithms"), in the setup of
Ziegler et al. 2019 and InstructGPT (Ouyang et al. 2022): every token is an action, the reward is
the KL penalty on every token plus the score on the last one (`policy_gradient.rollout`),

    r_t = s_t - beta kl_t,

a value head V(s_t) = w . h_{t-1} + b on the policy's last hidden states (`ValueHead`, a shared
trunk), generalised advantage estimation (Schulman et al. 2016, `losses.gae`),

    delta_t = r_t + gamma V(s_{t+1}) - V(s_t),   A_t = delta_t + gamma lam A_{t+1},
    R_t = A_t + V_old(s_t)                        (value targets),

optionally whitened advantages (`losses.whiten`, as TRL and the original lm-human-preferences),
and minibatch epochs of the clipped surrogate (`losses.ppo_clip`, per-token ratio) plus a clipped
value loss (`losses.clipped_value_loss`)

    L = L_clip + vf_coef * 0.5 mean_t max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2),

with approx-KL and clip-fraction diagnostics and a target-KL early stop. The loop (rollout,
update) is `policy_gradient.train`, shared with RLOO; PPO brings `ppo_batch` (old values, GAE)
and `ppo_loss`. The old values cost one extra inference forward per iteration (the sampler does
not return hidden states).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from irlhf import losses
from irlhf.algorithms import policy_gradient as pg
from irlhf.algorithms.optim import adamw
from irlhf.algorithms.result import Trained
from irlhf.policies.causal_lm import CausalLMPolicy


class PPOConfig(pg.PolicyGradientConfig):
    """PPO against a given score with a KL penalty (the `[ppo]` table of a config)."""

    samples_per_prompt: int = Field(1, ge=1)
    """Completions per prompt (PPO needs no group; > 1 only shares prompts)."""
    epochs: int = Field(4, ge=1)
    """Passes over each rollout batch (TRL's num_ppo_epochs)."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Discount over tokens (1: the undiscounted episode return, as InstructGPT)."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """GAE lambda."""
    vf_coef: float = Field(0.1, ge=0.0)
    """Weight of the value loss (TRL's default 0.1)."""
    clip_value: float = Field(0.2, gt=0.0)
    """Clip of the value update around the old value (reward units; TRL's cliprange_value)."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the batch's completion tokens."""


class ValueHead(nn.Module):
    """V(prefix) = w . h + b on the last hidden state h of `policy` (whose model it shares).

    The policy is held by reference, not registered, so its parameters are not this module's;
    initialised to V = 0 everywhere.
    """

    def __init__(self, policy: CausalLMPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.linear = nn.Linear(policy.model.config.hidden_size, 1, device=policy.device)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """(B, T, H) hidden states -> (B, T) values."""
        return self.linear(hidden).squeeze(-1)


def ppo_loss(
    value_head: ValueHead, config: PPOConfig, minibatch: dict[str, Any]
) -> tuple[Tensor, pg.Metrics]:
    """Clipped per-token surrogate plus vf_coef times the clipped value loss, one forward."""
    seqs = minibatch["sequences"]
    mask = seqs.completion_mask
    log_probs, values = pg.forward(value_head.policy, seqs, config.temperature, value_head)
    assert values is not None  # forward with a value head
    policy_loss, metrics = losses.ppo_clip(
        log_probs, minibatch["old_log_probs"], minibatch["advantages"], config.clip_eps, mask
    )
    value_loss, value_metrics = losses.clipped_value_loss(
        values, minibatch["old_values"], minibatch["returns"], config.clip_value, mask
    )
    loss = policy_loss + config.vf_coef * value_loss
    return loss, {**metrics, **value_metrics, "loss/total": loss.item()}


def ppo_batch(
    value_head: ValueHead, config: PPOConfig, batch: pg.Rollout
) -> tuple[dict[str, Any], pg.Metrics]:
    """The old values (one inference forward), GAE over tokens (each sequence ends at the
    horizon: no bootstrap), value targets R = A + V_old and, optionally, whitened advantages:
    the update's batch and GAE's metrics."""
    seqs, mask = batch.sequences, batch.sequences.completion_mask
    with torch.inference_mode():
        _, old_values = pg.forward(value_head.policy, seqs, config.temperature, value_head)
    assert old_values is not None  # forward with a value head
    old_values = old_values.clone()  # a normal tensor, usable in the backward pass
    advantages, gae_metrics = losses.gae(batch.rewards, old_values, config.gamma, config.lam, mask)
    returns = advantages + old_values
    if config.whiten_advantages:
        advantages = losses.whiten(advantages, mask)
    data = {
        "sequences": seqs,
        "old_log_probs": batch.log_probs,
        "old_values": old_values,
        "advantages": advantages,
        "returns": returns,
    }
    return data, gae_metrics


def train_ppo(
    policy: CausalLMPolicy,
    score: pg.ScoreFn,
    prompts: pg.PromptSampler,
    config: PPOConfig = PPOConfig(),
    reference: CausalLMPolicy | None = None,
    generator: torch.Generator | None = None,
    value_head: ValueHead | None = None,
) -> Trained[CausalLMPolicy, None]:
    """Optimise `policy` in place against `score` with a KL penalty to `reference` (default: a
    frozen copy of the starting policy; none when kl_coef = 0). Pass `value_head` to continue
    from an earlier run (iterated RLHF); else a fresh one. Returns the policy and one record
    per iteration."""
    value_head = value_head or ValueHead(policy)
    if value_head.policy is not policy:
        raise ValueError("value_head was built on a different policy")
    optimizer = adamw(
        [*policy.parameters(), *value_head.parameters()],
        config.lr,
        config.weight_decay,
        fused=False,  # torch's default update, as PPO has always used
    )
    loss_fn = partial(ppo_loss, value_head, config)
    make_batch = partial(ppo_batch, value_head, config)
    records = pg.train(
        policy, score, prompts, config, optimizer, loss_fn, make_batch, reference, generator
    )
    return Trained(policy, records, None)
