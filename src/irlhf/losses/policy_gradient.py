"""Policy-gradient losses and estimators: PPO, RLOO, GAE, KL penalties, value losses.

`ppo_clip` is PPO's clipped surrogate (Schulman et al. 2017) with cleanrl's diagnostics;
`clipped_value_loss` is the clipped value loss of cleanrl and TRL; `rloo_advantages` the
REINFORCE leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024); `gae` generalised
advantage estimation (Schulman et al. 2016); `whiten` the advantage normalisation of TRL and
lm-human-preferences (Ziegler et al. 2019); `kl_penalty` the per-token KL estimators
(J. Schulman, "Approximating KL divergence", 2020) of the RLHF reward (Ziegler et al. 2019;
Ouyang et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from irlhf.losses._checks import (
    Metrics,
    _check_choice,
    _check_float,
    _check_ndim,
    _check_range,
    _check_shape,
    _item,
    _mask_weights,
    _masked_mean,
    _shape,
)


def ppo_clip(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    clip_eps: float,
    mask: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """PPO clipped surrogate policy loss (Schulman et al. 2017, eq. 7), negated to minimise.

        rho = exp(log pi(a|s) - log pi_old(a|s))
        L = -mean_M[min(rho A, clip(rho, 1 - eps, 1 + eps) A)]

    Diagnostics as cleanrl: clipfrac = mean_M[|rho - 1| > eps]; approx_kl = mean_M[(rho - 1) -
    log rho] (the k3 estimator of KL(pi_old || pi), Schulman 2020).

    Args:
        logprobs: [B, T] log-prob of each sampled token under the current policy (or [B]).
        old_logprobs: same shape, under the policy that sampled the tokens (no gradient).
        advantages: same shape as logprobs (per token), or [B] (per sequence, broadcast over T).
        clip_eps: eps > 0.
        mask: same shape as logprobs, the tokens to train on.

    Returns:
        (loss, {"loss/policy", "ppo/clipfrac", "ppo/approx_kl", "ppo/ratio_mean"}).
    """
    fn = "ppo_clip"
    _check_float(fn, "logprobs", logprobs)
    _check_ndim(fn, "logprobs", logprobs, (1, 2), "[B, T] or [B]")
    _check_shape(fn, "old_logprobs", old_logprobs, _shape(logprobs), "logprobs")
    if logprobs.dim() == 2 and advantages.dim() == 1:
        _check_shape(fn, "advantages", advantages, _shape(logprobs)[:1], "logprobs.shape[:1]")
        advantages = advantages.unsqueeze(1)  # (B, 1), broadcast over T
    else:
        _check_shape(fn, "advantages", advantages, _shape(logprobs), "logprobs")
    _check_range(fn, "clip_eps", clip_eps, 0.0, math.inf, low_open=True, high_open=True)
    weights = _mask_weights(fn, "mask", mask, logprobs, "logprobs")

    # Zero the log-ratio at masked positions so garbage there cannot overflow exp() into nan grads.
    log_ratio = torch.where(weights != 0, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -_masked_mean(fn, torch.minimum(unclipped, clipped), weights)
    with torch.no_grad():
        clipfrac = _masked_mean(fn, ((ratio - 1.0).abs() > clip_eps).to(ratio.dtype), weights)
        approx_kl = _masked_mean(fn, (ratio - 1.0) - log_ratio, weights)
        ratio_mean = _masked_mean(fn, ratio, weights)
    metrics = {
        "loss/policy": _item(loss),
        "ppo/clipfrac": _item(clipfrac),
        "ppo/approx_kl": _item(approx_kl),
        "ppo/ratio_mean": _item(ratio_mean),
    }
    return loss, metrics


def whiten(x: Tensor, mask: Tensor) -> Tensor:
    """(x - mean) / (std + 1e-8) over the masked positions; 0 elsewhere.

        mean = sum(x m) / sum(m),   std = sqrt(sum((x - mean)^2 m) / sum(m))

    The advantage normalisation of TRL and lm-human-preferences (Ziegler et al. 2019), with
    the population std. Args: x [B, T], mask [B, T] bool/float. Returns [B, T].
    """
    weights = mask.to(x.dtype)
    mean = (x * weights).sum() / weights.sum()
    var = ((x - mean).square() * weights).sum() / weights.sum()
    return (x - mean) / (var.sqrt() + 1e-8) * weights


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, clip_value: float, mask: Tensor
) -> tuple[Tensor, Metrics]:
    """PPO's clipped value loss (cleanrl, TRL's cliprange_value):

        L = 0.5 mean_M max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)

    Args:
        values: [B, T] V(s_t) of the current value head.
        old_values: [B, T] V_old(s_t) at the rollout (no gradient).
        returns: [B, T] value targets R_t.
        clip_value: c, in reward units.
        mask: [B, T] bool/float, the tokens to train on.

    Returns:
        (loss, {"loss/value", "value/clipfrac" (fraction of masked positions with
        |V - V_old| > c), "value/mean"}).
    """
    weights = mask.to(values.dtype)
    clipped = old_values + (values - old_values).clamp(-clip_value, clip_value)
    worst = torch.maximum((values - returns).square(), (clipped - returns).square())
    loss = 0.5 * (worst * weights).sum() / weights.sum()
    with torch.no_grad():
        was_clipped = ((values - old_values).abs() > clip_value).to(values.dtype)
        clipfrac = (was_clipped * weights).sum() / weights.sum()
        mean = (values * weights).sum() / weights.sum()
    return loss, {
        "loss/value": loss.item(),
        "value/clipfrac": clipfrac.item(),
        "value/mean": mean.item(),
    }


def rloo_advantages(rewards: Tensor) -> tuple[Tensor, Metrics]:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024; Kool et al. 2019).

        A_ij = r_ij - (1 / (k - 1)) sum_{l != j} r_il  =  k / (k - 1) (r_ij - mean_l r_il)

    for k samples j of each prompt i. Each sample's baseline is the mean reward of the other
    samples of the same prompt, so it is independent of the sample and the estimator unbiased.

    Args:
        rewards: [P, k] sequence rewards, k >= 2 samples for each of P prompts.

    Returns:
        (advantages [P, k], {"rloo/advantage_mean", "rloo/advantage_std", "rloo/reward_mean"}).
    """
    fn = "rloo_advantages"
    _check_float(fn, "rewards", rewards)
    _check_ndim(fn, "rewards", rewards, (2,), "[prompts, samples_per_prompt]")
    k = rewards.shape[1]
    if k < 2:
        raise ValueError(f"{fn}: rewards must have >= 2 samples per prompt, got shape {(k,)}")
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)  # (P, k)
    advantages = rewards - baseline
    metrics = {
        "rloo/advantage_mean": _item(advantages.mean()),
        "rloo/advantage_std": _item(advantages.std(correction=0)),
        "rloo/reward_mean": _item(rewards.mean()),
    }
    return advantages, metrics


def gae(
    rewards: Tensor,
    values: Tensor,
    gamma: float,
    lam: float,
    mask: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """Generalised advantage estimation (Schulman et al. 2016), backwards recursion over tokens.

        delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma lam A_{t+1}

    A position t + 1 that is masked out is terminal: V(s_{t+1}) = 0 and the recursion stops
    there, so each contiguous run of mask == True is its own episode (a completion followed by
    padding ends after its last valid token). After the last column, V(s_T) is
    `values[:, T]` when `values` has T + 1 columns (a bootstrap for sequences truncated by the
    horizon; set it to 0 for sequences that ended), else 0. Advantages at masked positions are
    0. The value targets are returns = advantages + values[:, :T].

    Args:
        rewards: [B, T] per-token rewards.
        values: [B, T] value estimates V(s_t), or [B, T + 1] with the bootstrap value last.
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1] (0: one-step TD, 1: Monte-Carlo return minus value).
        mask: [B, T] bool/float, the valid (generated) tokens.

    Returns:
        (advantages [B, T], {"gae/advantage_mean", "gae/advantage_std", "gae/return_mean"},
        means over masked positions).
    """
    fn = "gae"
    _check_float(fn, "rewards", rewards)
    _check_ndim(fn, "rewards", rewards, (2,), "[B, T]")
    _check_float(fn, "values", values)
    batch, horizon = _shape(rewards)
    if _shape(values) not in ((batch, horizon), (batch, horizon + 1)):
        raise ValueError(
            f"{fn}: values must have shape {(batch, horizon)} or {(batch, horizon + 1)} like "
            f"rewards (+1 bootstrap column), got {_shape(values)}"
        )
    _check_range(fn, "gamma", gamma, 0.0, 1.0, low_open=False, high_open=False)
    _check_range(fn, "lam", lam, 0.0, 1.0, low_open=False, high_open=False)
    weights = _mask_weights(fn, "mask", mask, rewards, "rewards")
    valid = weights != 0  # (B, T)

    if values.shape[1] == horizon + 1:
        bootstrap = values[:, horizon]
        values = values[:, :horizon]
    else:
        bootstrap = torch.zeros_like(rewards[:, 0])
    # next_valid[:, t]: does the episode continue to t + 1? The column after T always "continues"
    # into the bootstrap value (which is 0 when none was given).
    next_valid = torch.cat([valid[:, 1:], torch.ones_like(valid[:, :1])], dim=1)  # (B, T)
    next_values = torch.cat([values[:, 1:], bootstrap.unsqueeze(1)], dim=1)  # (B, T)
    next_values = torch.where(next_valid, next_values, torch.zeros_like(next_values))
    values_v = torch.where(valid, values, torch.zeros_like(values))
    rewards_v = torch.where(valid, rewards, torch.zeros_like(rewards))

    deltas = rewards_v + gamma * next_values - values_v  # (B, T)
    running = torch.zeros_like(rewards[:, 0])  # A_{t+1}, shape (B,)
    reversed_advantages = []
    for t in reversed(range(horizon)):
        # A masked position holds A = 0, so the recursion stops at the end of each episode.
        running = deltas[:, t] + gamma * lam * running
        running = torch.where(valid[:, t], running, torch.zeros_like(running))
        reversed_advantages.append(running)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)  # (B, T)

    with torch.no_grad():
        mean = _masked_mean(fn, advantages, weights)
        std = _masked_mean(fn, (advantages - mean).square(), weights).sqrt()
        return_mean = _masked_mean(fn, advantages + values_v, weights)
    metrics = {
        "gae/advantage_mean": _item(mean),
        "gae/advantage_std": _item(std),
        "gae/return_mean": _item(return_mean),
    }
    return advantages, metrics


def _kl_k1(log_ratio: Tensor) -> Tensor:
    return log_ratio


def _kl_k2(log_ratio: Tensor) -> Tensor:
    return 0.5 * log_ratio.square()


def _kl_k3(log_ratio: Tensor) -> Tensor:
    # With x = log q - log p = -log_ratio: exp(x) - 1 - x >= 0, unbiased for KL(p || q).
    return torch.expm1(-log_ratio) + log_ratio


def _kl_abs(log_ratio: Tensor) -> Tensor:
    return log_ratio.abs()


KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {
    "k1": _kl_k1,
    "k2": _kl_k2,
    "k3": _kl_k3,
    "abs": _kl_abs,
}
"""Per-token KL estimators as functions of log_ratio = log p(x) - log q(x), x ~ p."""


def kl_penalty(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    kind: Literal["k1", "k2", "k3", "abs"] = "k1",
    mask: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """Per-token estimators of KL(pi || pi_ref) from tokens sampled from pi (Schulman 2020).

    With log p = `logprobs` (the sampling policy pi) and log q = `ref_logprobs`:

        k1  = log p - log q                            unbiased, high variance, can be < 0
        k2  = 0.5 (log p - log q)^2                    biased, low variance, >= 0
        k3  = exp(log q - log p) - 1 - (log q - log p) unbiased, low variance, >= 0
        abs = |log p - log q|                          (as TRL's "abs")

    (J. Schulman, "Approximating KL divergence", 2020.) The RLHF reward is then
    r_t - beta kl_t (Ziegler et al. 2019; Ouyang et al. 2022).

    Args:
        logprobs: [B, T] (any shape) log-prob of each sampled token under the policy.
        ref_logprobs: same shape, under the reference policy.
        kind: "k1", "k2", "k3" or "abs".
        mask: same shape, the tokens over which "kl/mean" averages.

    Returns:
        (per-token estimate with the shape of logprobs, {"kl/mean"}); the per-token tensor is
        not masked.
    """
    fn = "kl_penalty"
    _check_float(fn, "logprobs", logprobs)
    _check_shape(fn, "ref_logprobs", ref_logprobs, _shape(logprobs), "logprobs")
    _check_choice(fn, "kind", kind, tuple(KL_ESTIMATORS))
    weights = _mask_weights(fn, "mask", mask, logprobs, "logprobs")
    per_token = KL_ESTIMATORS[kind](logprobs - ref_logprobs)
    return per_token, {"kl/mean": _item(_masked_mean(fn, per_token, weights))}
