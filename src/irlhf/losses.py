"""The objectives of every paradigm, as small pure tensor functions.

One function per objective, in the style of DeepMind's rlax: tensors in, `(value, metrics)` out,
where `value` is a scalar loss to *minimise* (or, for advantage estimators and estimators of
per-token quantities, a tensor) and `metrics` maps namespaced keys ("loss/dpo", "ppo/clipfrac")
to python floats. No logging, no I/O, no optimiser steps: algorithms call these and log the
metrics themselves. Shapes and scalar arguments are checked, and a violation raises a one-line
`ValueError` naming the argument.

Conventions:
  * B = batch, T = tokens (time), V = vocabulary.
  * A mask is a bool or float (0/1) tensor with the shape of the per-token quantity it masks;
    means over tokens average over the positions where the mask is nonzero, and masked-out
    positions may hold anything (padding ids, garbage logits) without affecting the result.
  * Log-probabilities are natural logs of the probability of the sampled token (gathered with
    `selective_log_softmax` or equivalent), shape [B, T] per token or [B] per sequence.

Papers: NLL (behaviour cloning); generalized JSD (Agarwal et al. 2024, GKD); Bradley-Terry
(Bradley & Terry 1952; Christiano et al. 2017; Ouyang et al. 2022); DPO (Rafailov et al. 2023);
PPO (Schulman et al. 2017); RLOO (Ahmadian et al. 2024); GAE (Schulman et al. 2016); KL
estimators (Schulman 2020, "Approximating KL divergence"); GAIL (Ho & Ermon 2016); AIRL (Fu et
al. 2018); IQ-Learn (Garg et al. 2021).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Metrics = dict[str, float]

# ---------------------------------------------------------------------------------------------
# Checks and reductions shared by every loss.
# ---------------------------------------------------------------------------------------------


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_shape(fn: str, name: str, t: Tensor, expected: tuple[int, ...], like: str) -> None:
    """Raise `fn: name must have shape <expected> like <like>, got <actual>` on a mismatch."""
    if _shape(t) != tuple(expected):
        raise ValueError(
            f"{fn}: {name} must have shape {tuple(expected)} like {like}, got {_shape(t)}"
        )


def _check_ndim(fn: str, name: str, t: Tensor, ndims: tuple[int, ...], what: str) -> None:
    if t.dim() not in ndims:
        raise ValueError(f"{fn}: {name} must be {what}, got shape {_shape(t)}")


def _check_float(fn: str, name: str, t: Tensor) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")


def _check_range(
    fn: str, name: str, value: float, low: float, high: float, low_open: bool, high_open: bool
) -> None:
    """Raise unless low <(=) value <(=) high (nan and inf always fail an open bound)."""
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{fn}: {name} must be in {interval}, got {value!r}")


def _check_choice(fn: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {list(allowed)}, got {value!r}")


def _mask_weights(fn: str, name: str, mask: Tensor | None, like: Tensor, like_name: str) -> Tensor:
    """The mask as float weights with the dtype of `like` (all ones when None), shape-checked."""
    if mask is None:
        return torch.ones_like(like)
    _check_shape(fn, name, mask, _shape(like), like_name)
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise ValueError(f"{fn}: {name} must be bool or floating point, got {mask.dtype}")
    return mask.to(like.dtype)


def _masked_mean(fn: str, x: Tensor, weights: Tensor) -> Tensor:
    """sum(x * w) / sum(w) over positions with w != 0; masked positions may hold nan or inf."""
    count = weights.sum()
    if count.item() <= 0:
        raise ValueError(f"{fn}: mask selects no positions")
    x = torch.where(weights != 0, x, torch.zeros_like(x))
    return (x * weights).sum() / count


def _item(x: Tensor) -> float:
    return float(x.detach().item())


# ---------------------------------------------------------------------------------------------
# Imitation: behaviour cloning and distillation.
# ---------------------------------------------------------------------------------------------


def nll(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Metrics]:
    """Mean negative log-likelihood of the target tokens (behaviour cloning / SFT).

        L = -(1 / |M|) sum_{(b,t) in M} log softmax(logits[b, t])[targets[b, t]]

    where M is the set of positions with mask != 0 (all positions when `mask` is None).
    Maximum-likelihood imitation, i.e. behaviour cloning (Pomerleau 1991; Ross & Bagnell 2010).

    Args:
        logits: [B, T, V] unnormalised next-token scores (any leading shape [..., V] works).
        targets: [B, T] long token ids; ids at masked positions are ignored (may be -100).
        mask: [B, T] bool/float, positions to score.

    Returns:
        (loss, {"loss/nll", "nll/accuracy" (fraction of masked positions where the argmax is the
        target), "nll/tokens" (number of scored positions)}).
    """
    fn = "nll"
    _check_float(fn, "logits", logits)
    if logits.dim() < 2:
        raise ValueError(f"{fn}: logits must be [B, T, V], got shape {_shape(logits)}")
    _check_shape(fn, "targets", targets, _shape(logits)[:-1], "logits.shape[:-1]")
    if targets.dtype != torch.long:
        raise ValueError(f"{fn}: targets must be long, got {targets.dtype}")
    weights = _mask_weights(fn, "mask", mask, targets.to(logits.dtype), "targets")
    # Masked positions may carry an ignore id such as -100: gather a valid id there instead.
    safe_targets = torch.where(weights != 0, targets, torch.zeros_like(targets))
    log_probs = F.log_softmax(logits, dim=-1)  # (B, T, V)
    token_nll = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
    loss = _masked_mean(fn, token_nll, weights)
    correct = (logits.argmax(dim=-1) == safe_targets).to(logits.dtype)
    metrics = {
        "loss/nll": _item(loss),
        "nll/accuracy": _item(_masked_mean(fn, correct, weights)),
        "nll/tokens": _item(weights.sum()),
    }
    return loss, metrics


def _kl_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last axis; terms with p_v = 0 are 0."""
    p = log_p.exp()
    # A zero-probability token (log p = -inf, e.g. a tabular expert) contributes 0, not nan.
    safe_log_p = torch.where(p > 0, log_p, torch.zeros_like(log_p))
    terms = torch.where(p > 0, p * (safe_log_p - log_q), torch.zeros_like(log_p))
    return terms.sum(dim=-1)


class _MixtureJSD(torch.autograd.Function):
    """D = beta KL(P || M) + (1 - beta) KL(Q || M) per token, M = beta P + (1 - beta) Q, for a
    fixed teacher P (log-probabilities) and the student's logits s (Q = softmax(s)), with the
    student's gradient written out (issue 7: the distillation step's loss took ~15% of the step
    through autograd's ~40 passes over the [B, T, V] tensors; this takes ~15).

    Forward: log M = logaddexp(log beta + log P, log(1 - beta) + log Q), stable for tiny P or Q.
    Where P = 0 (or Q = 0: a logit of -inf), log(P / M) (or log(Q / M)) is -inf; it is replaced
    by the most negative finite float, so that its term P log(P / M) is 0, not nan, as in the
    formula's limit. Backward: on the simplex dD/dQ_v = (1 - beta) log(Q_v / M_v) (the terms
    from M's dependence on Q cancel: beta P_v / M_v + (1 - beta) Q_v / M_v = 1), and through
    the softmax

        dD/ds = (1 - beta) Q (log(Q / M) - KL(Q || M)),

    so the forward keeps Q, log(Q / M) and KL(Q || M). Equal to autograd through the formula
    to float rounding (tests/test_losses.py: gradcheck in float64). First derivatives only: a
    backward with create_graph=True raises (the saved tensors are outside the graph)."""

    @staticmethod
    def forward(ctx, student_logits: Tensor, teacher_log_probs: Tensor, beta: float) -> Tensor:
        lowest = torch.finfo(student_logits.dtype).min
        log_q = F.log_softmax(student_logits, dim=-1)  # (B, T, V)
        log_m = torch.logaddexp(teacher_log_probs + math.log(beta), log_q + math.log1p(-beta))
        log_m.clamp_(min=lowest)  # -inf only where P = Q = 0
        q = log_q.exp()
        log_q_over_m = log_q.sub_(log_m).clamp_(min=lowest)  # in place: log Q is not needed again
        kl_qm = (q * log_q_over_m).sum(dim=-1)  # (B, T)
        log_p_over_m = (teacher_log_probs - log_m).clamp_(min=lowest)
        kl_pm = (teacher_log_probs.exp() * log_p_over_m).sum(dim=-1)  # (B, T)
        ctx.save_for_backward(q, log_q_over_m, kl_qm)
        ctx.beta = beta
        return beta * kl_pm + (1.0 - beta) * kl_qm

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        _first_derivative_only("generalized_jsd")
        q, log_q_over_m, kl_qm = ctx.saved_tensors
        scale = (grad * (1.0 - ctx.beta)).unsqueeze(-1)  # (B, T, 1)
        grad_logits = (log_q_over_m - kl_qm.unsqueeze(-1)).mul_(q).mul_(scale)
        return grad_logits, None, None


def _first_derivative_only(what: str) -> None:
    """Raise in a backward pass that builds a graph (create_graph=True, grad mode on): a
    written-out gradient computed from saved tensors would silently miss second-order terms.
    (`once_differentiable` raises only when the incoming gradient itself requires grad.)"""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{what}: the written-out gradient supports first derivatives only "
            "(backward with create_graph=True is not supported)"
        )


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    reduction: Literal["token_mean", "batchmean", "sum"] = "token_mean",
) -> tuple[Tensor, Metrics]:
    """Generalized Jensen-Shannon divergence between teacher P and student Q, per token.

    GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes", eq. 1), with TRL's `GKDTrainer.generalized_jsd_loss` conventions:

        P = softmax(teacher_logits / tau),  Q = softmax(student_logits / tau)
        beta = 0:      D = KL(P || Q)                       (forward KL, as supervised KD)
        beta = 1:      D = KL(Q || P)                       (reverse KL, mode seeking)
        0 < beta < 1:  M = beta P + (1 - beta) Q            (mixed in log space via logsumexp)
                       D = beta KL(P || M) + (1 - beta) KL(Q || M)

    Each KL is summed over the vocabulary, giving D[b, t]. Note that the 0 < beta < 1 formula
    tends to 0 (not to the forward KL) as beta -> 0; the end points are special cases, as in TRL.
    `teacher_logits` may be log-probabilities (log_softmax is applied anyway), including -inf for
    tokens the teacher never emits.

    Reductions:
        "token_mean" (default): sum_{b,t} D[b,t] m[b,t] / sum_{b,t} m[b,t], the mean over
            scored tokens.
        "batchmean": a mean over scored tokens, equal to "token_mean". It matches TRL's
            "batchmean" when labels are given (TRL divides by the number of labels != -100, as
            GKDTrainer always calls it). Without labels TRL divides a [B, T, V] loss by B only
            (torch's `F.kl_div` batchmean); irlhf does not (tests/test_trl_parity.py, xfail).
        "sum": sum_{b,t} D[b,t] m[b,t] (TRL's "sum").

    Args:
        student_logits: [B, T, V] (any [..., V]).
        teacher_logits: same shape as student_logits.
        beta: interpolation weight in [0, 1].
        mask: [B, T] bool/float, positions to score.
        temperature: tau > 0, divides both logits.
        reduction: "token_mean", "batchmean" or "sum".

    Returns:
        (loss, {"loss/jsd", "jsd/tokens"}).
    """
    fn = "generalized_jsd"
    _check_float(fn, "student_logits", student_logits)
    _check_float(fn, "teacher_logits", teacher_logits)
    if student_logits.dim() < 2:
        raise ValueError(f"{fn}: student_logits must be [B, T, V], got {_shape(student_logits)}")
    _check_shape(fn, "teacher_logits", teacher_logits, _shape(student_logits), "student_logits")
    _check_range(fn, "beta", beta, 0.0, 1.0, low_open=False, high_open=False)
    _check_range(fn, "temperature", temperature, 0.0, math.inf, low_open=True, high_open=True)
    _check_choice(fn, "reduction", reduction, ("token_mean", "batchmean", "sum"))

    if temperature != 1.0:
        student_logits, teacher_logits = student_logits / temperature, teacher_logits / temperature
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)  # (B, T, V)
    if 0.0 < beta < 1.0 and not teacher_log_probs.requires_grad:
        per_token = _MixtureJSD.apply(student_logits, teacher_log_probs, beta)  # (B, T)
    else:
        student_log_probs = F.log_softmax(student_logits, dim=-1)  # (B, T, V)
        if beta == 0.0:
            per_token = _kl_from_log_probs(teacher_log_probs, student_log_probs)
        elif beta == 1.0:
            per_token = _kl_from_log_probs(student_log_probs, teacher_log_probs)
        else:  # a teacher that is trained too: autograd through the formula of _MixtureJSD
            mixture_log_probs = torch.logaddexp(
                teacher_log_probs + math.log(beta), student_log_probs + math.log1p(-beta)
            )
            per_token = beta * _kl_from_log_probs(teacher_log_probs, mixture_log_probs) + (
                1.0 - beta
            ) * _kl_from_log_probs(student_log_probs, mixture_log_probs)  # (B, T)

    weights = _mask_weights(fn, "mask", mask, per_token, "student_logits.shape[:-1]")
    if reduction == "sum":
        loss = torch.where(weights != 0, per_token, torch.zeros_like(per_token))
        loss = (loss * weights).sum()
    else:
        loss = _masked_mean(fn, per_token, weights)
    metrics = {"loss/jsd": _item(loss), "jsd/tokens": _item(weights.sum())}
    return loss, metrics


# ---------------------------------------------------------------------------------------------
# Preferences: reward modelling and DPO.
# ---------------------------------------------------------------------------------------------


def bradley_terry(chosen_rewards: Tensor, rejected_rewards: Tensor) -> tuple[Tensor, Metrics]:
    """Bradley-Terry negative log-likelihood of the annotator's choices.

        P(chosen > rejected) = sigmoid(r_c - r_r)
        L = -mean log sigmoid(r_c - r_r)

    (Bradley & Terry 1952; as a reward-model loss: Christiano et al. 2017, Ouyang et al. 2022.)

    Args:
        chosen_rewards: [N] reward of the preferred sequence of each comparison.
        rejected_rewards: [N] reward of the other sequence.

    Returns:
        (loss, {"loss/bradley_terry", "bt/accuracy" (fraction with r_c > r_r; ties count as
        wrong), "bt/margin" (mean r_c - r_r)}).
    """
    fn = "bradley_terry"
    _check_float(fn, "chosen_rewards", chosen_rewards)
    _check_ndim(fn, "chosen_rewards", chosen_rewards, (1,), "[N]")
    _check_shape(fn, "rejected_rewards", rejected_rewards, _shape(chosen_rewards), "chosen_rewards")
    margin = chosen_rewards - rejected_rewards  # (N,)
    loss = -F.logsigmoid(margin).mean()
    metrics = {
        "loss/bradley_terry": _item(loss),
        "bt/accuracy": _item((margin > 0).to(margin.dtype).mean()),
        "bt/margin": _item(margin.mean()),
    }
    return loss, metrics


def dpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Metrics]:
    """Direct Preference Optimisation, sigmoid loss (Rafailov et al. 2023), as TRL's default.

        h = beta ((log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r)))
        L = -mean[(1 - eps) log sigmoid(h) + eps log sigmoid(-h)]

    eps = `label_smoothing` is the conservative DPO (cDPO, Mitchell 2023) assumption that each
    label is flipped with probability eps; eps = 0 is plain DPO. The implicit rewards are
    beta (log pi - log pi_ref) of each sequence.

    Args:
        policy_chosen_logps: [N] summed log-prob of each chosen completion under the policy.
        policy_rejected_logps, ref_chosen_logps, ref_rejected_logps: [N] likewise.
        beta: KL-regularisation strength, > 0.
        label_smoothing: eps in [0, 0.5].

    Returns:
        (loss, {"loss/dpo", "dpo/accuracy" (chosen implicit reward > rejected), "dpo/margin",
        "dpo/chosen_reward", "dpo/rejected_reward" (batch means of the implicit rewards)}).
    """
    fn = "dpo"
    _check_float(fn, "policy_chosen_logps", policy_chosen_logps)
    _check_ndim(fn, "policy_chosen_logps", policy_chosen_logps, (1,), "[N]")
    shape = _shape(policy_chosen_logps)
    for name, t in (
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
    ):
        _check_shape(fn, name, t, shape, "policy_chosen_logps")
    _check_range(fn, "beta", beta, 0.0, math.inf, low_open=True, high_open=True)
    _check_range(fn, "label_smoothing", label_smoothing, 0.0, 0.5, low_open=False, high_open=False)

    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # (N,)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # (N,)
    h = chosen_rewards - rejected_rewards
    losses = -(1.0 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    loss = losses.mean()
    metrics = {
        "loss/dpo": _item(loss),
        "dpo/accuracy": _item((h > 0).to(h.dtype).mean()),
        "dpo/margin": _item(h.mean()),
        "dpo/chosen_reward": _item(chosen_rewards.mean()),
        "dpo/rejected_reward": _item(rejected_rewards.mean()),
    }
    return loss, metrics


# ---------------------------------------------------------------------------------------------
# Policy optimisation: PPO, RLOO, GAE, KL penalties.
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Inverse RL: GAIL, AIRL, IQ-Learn.
# ---------------------------------------------------------------------------------------------


def gail_discriminator(
    expert_logits: Tensor,
    policy_logits: Tensor,
    expert_mask: Tensor | None = None,
    policy_mask: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """GAIL discriminator loss (Ho & Ermon 2016), binary cross-entropy with expert = 1.

        D(s, a) = sigmoid(logit(s, a)) = P(expert | s, a)
        L = -E_expert[log D] - E_policy[log(1 - D)]
          = mean_expert softplus(-logit) + mean_policy softplus(logit)

    Each expectation is a mean over its own (masked) samples, so unequal batch sizes are fine.
    Common policy rewards built from the logits (by the caller): -log(1 - D) = softplus(logit),
    or log D - log(1 - D) = logit (the AIRL form).

    Args:
        expert_logits: discriminator logits on expert (prefix, token) pairs, any shape.
        policy_logits: logits on the learner's pairs, any shape.
        expert_mask, policy_mask: bool/float masks of the same shapes as the logits.

    Returns:
        (loss, {"loss/discriminator", "disc/expert_acc" (fraction of expert logits > 0),
        "disc/policy_acc" (fraction of policy logits < 0)}).
    """
    fn = "gail_discriminator"
    _check_float(fn, "expert_logits", expert_logits)
    _check_float(fn, "policy_logits", policy_logits)
    expert_w = _mask_weights(fn, "expert_mask", expert_mask, expert_logits, "expert_logits")
    policy_w = _mask_weights(fn, "policy_mask", policy_mask, policy_logits, "policy_logits")
    expert_loss = _masked_mean(fn, F.softplus(-expert_logits), expert_w)
    policy_loss = _masked_mean(fn, F.softplus(policy_logits), policy_w)
    loss = expert_loss + policy_loss
    metrics = {
        "loss/discriminator": _item(loss),
        "disc/expert_loss": _item(expert_loss),
        "disc/policy_loss": _item(policy_loss),
        "disc/expert_acc": _item(
            _masked_mean(fn, (expert_logits > 0).to(expert_logits.dtype), expert_w)
        ),
        "disc/policy_acc": _item(
            _masked_mean(fn, (policy_logits < 0).to(policy_logits.dtype), policy_w)
        ),
    }
    return loss, metrics


def airl_logits(f: Tensor, log_pi: Tensor) -> tuple[Tensor, Metrics]:
    """AIRL discriminator logits (Fu et al. 2018, "Learning Robust Rewards with Adversarial IRL").

        D(s, a, s') = exp(f(s, a, s')) / (exp(f(s, a, s')) + pi(a | s))
        logit D     = log D - log(1 - D) = f(s, a, s') - log pi(a | s)

    The caller builds f = g(s, a) + gamma h(s') - h(s) (reward approximator g, shaping potential
    h) and trains the logits with `gail_discriminator`; the policy's reward is then
    log D - log(1 - D) = f - log pi (an entropy-regularised reward), and g recovers the reward up
    to a constant. Pass log_pi detached unless gradients to the policy are intended.

    Args:
        f: [B, T] (any shape) f(s_t, a_t, s_{t+1}).
        log_pi: same shape, log pi(a_t | s_t) of the current policy.

    Returns:
        (logits with the shape of f, {"airl/f_mean", "airl/log_pi_mean", "airl/logit_mean"}).
    """
    fn = "airl_logits"
    _check_float(fn, "f", f)
    _check_shape(fn, "log_pi", log_pi, _shape(f), "f")
    logits = f - log_pi
    metrics = {
        "airl/f_mean": _item(f.mean()),
        "airl/log_pi_mean": _item(log_pi.mean()),
        "airl/logit_mean": _item(logits.mean()),
    }
    return logits, metrics


def iq_learn(
    q_expert: Tensor,
    v_expert: Tensor,
    v_next_expert: Tensor,
    v_policy: Tensor | None,
    v_next_policy: Tensor | None,
    gamma: float,
    mask_expert: Tensor | None = None,
    mask_policy: Tensor | None = None,
    divergence: Literal["chi2", "none"] = "chi2",
    alpha: float = 0.5,
) -> tuple[Tensor, Metrics]:
    """IQ-Learn inverse soft-Q loss (Garg et al. 2021, "IQ-Learn: Inverse soft-Q Learning for
    Imitation"), to minimise over Q.

    IQ-Learn maximises over Q, with the implied reward r(s, a) = Q(s, a) - gamma V(s'),

        J(Q) = E_expert[phi(r)] - (1 - gamma) E_{s0}[V(s0)],

    and, like the official implementation ("value" and "value_expert" losses, which replace the
    start-state term by the telescoping E_rho[V(s) - gamma V(s')]), this returns the practical

        L = -E_expert[r] + E_mixed[V(s) - gamma V(s')] + 1 / (4 alpha) E_expert[r^2]

    where the last term is the chi^2 regulariser phi(r) = r - r^2 / (4 alpha) (divergence "chi2";
    "none" uses phi(r) = r, no regulariser). E_mixed averages over the pooled valid
    transitions of the expert and the policy batch (the official "value" loss, online); with
    v_policy = v_next_policy = None it averages over expert transitions only (the official
    "value_expert" loss, which works offline).

    Token sequences (the LM logits are Q, state s_t = the prefix, action a_t = token t):
    the caller computes, at every position t of each batch,
        q_*[b, t]      = Q(s_t, a_t), the logit of the taken token,
        v_*[b, t]      = V(s_t) = alpha_soft logsumexp_a(Q(s_t, a) / alpha_soft),
        v_next_*[b, t] = V(s_{t+1}), which must be 0 where s_{t+1} is terminal (after the last
                         valid token), i.e. the official (1 - done) gamma V(s').
    Masks mark the valid tokens; masked positions may hold anything.

    Args:
        q_expert, v_expert, v_next_expert: [B, T] on expert demonstrations.
        v_policy, v_next_policy: [B', T'] on the learner's rollouts, or both None (offline).
        gamma: discount in [0, 1].
        mask_expert: [B, T] bool/float; mask_policy: [B', T'] bool/float.
        divergence: "chi2" or "none".
        alpha: chi^2 regulariser strength, > 0 (official default 0.5).

    Returns:
        (loss, {"loss/iq", "iq/reward_expert" (mean r on expert transitions), "iq/softq_term"
        (-E_expert[r]), "iq/value_term", "iq/chi2_term", "iq/v_expert" (mean V(s) on expert)}).
    """
    fn = "iq_learn"
    _check_float(fn, "q_expert", q_expert)
    shape_e = _shape(q_expert)
    _check_shape(fn, "v_expert", v_expert, shape_e, "q_expert")
    _check_shape(fn, "v_next_expert", v_next_expert, shape_e, "q_expert")
    if (v_policy is None) != (v_next_policy is None):
        raise ValueError(f"{fn}: v_policy and v_next_policy must both be tensors or both be None")
    if v_policy is not None and v_next_policy is not None:
        _check_float(fn, "v_policy", v_policy)
        _check_shape(fn, "v_next_policy", v_next_policy, _shape(v_policy), "v_policy")
    elif mask_policy is not None:
        raise ValueError(f"{fn}: mask_policy given without v_policy")
    _check_range(fn, "gamma", gamma, 0.0, 1.0, low_open=False, high_open=False)
    _check_choice(fn, "divergence", divergence, ("chi2", "none"))
    _check_range(fn, "alpha", alpha, 0.0, math.inf, low_open=True, high_open=True)

    w_e = _mask_weights(fn, "mask_expert", mask_expert, q_expert, "q_expert")
    reward_expert = q_expert - gamma * v_next_expert  # (B, T), r = Q(s, a) - gamma V(s')
    softq_term = -_masked_mean(fn, reward_expert, w_e)

    value_diff_e = v_expert - gamma * v_next_expert  # (B, T)
    if v_policy is not None and v_next_policy is not None:
        w_p = _mask_weights(fn, "mask_policy", mask_policy, v_policy, "v_policy")
        value_diff_p = v_policy - gamma * v_next_policy
        # Pooled mean over both batches' valid transitions, as the official concatenated batch.
        values = torch.cat([value_diff_e.flatten(), value_diff_p.flatten()])
        weights = torch.cat([w_e.flatten(), w_p.flatten()])
        value_term = _masked_mean(fn, values, weights)
    else:
        value_term = _masked_mean(fn, value_diff_e, w_e)

    if divergence == "chi2":
        chi2_term = _masked_mean(fn, reward_expert.square(), w_e) / (4.0 * alpha)
    else:
        chi2_term = torch.zeros((), dtype=q_expert.dtype, device=q_expert.device)
    loss = softq_term + value_term + chi2_term
    metrics = {
        "loss/iq": _item(loss),
        "iq/reward_expert": _item(-softq_term),
        "iq/softq_term": _item(softq_term),
        "iq/value_term": _item(value_term),
        "iq/chi2_term": _item(chi2_term),
        "iq/v_expert": _item(_masked_mean(fn, v_expert, w_e)),
    }
    return loss, metrics
