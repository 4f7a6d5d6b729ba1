"""Imitation losses: behaviour cloning and distillation.

`nll` is maximum-likelihood imitation, behaviour cloning / SFT (Pomerleau 1991; Ross & Bagnell
2010); `next_token_cross_entropy` is the same objective on every position of a language-model
pretraining window. `generalized_jsd` is GKD's divergence between a teacher's and the student's
next-token distributions (Agarwal et al. 2024, "On-Policy Distillation of Language Models:
Learning from Self-Generated Mistakes"), with TRL's `GKDTrainer.generalized_jsd_loss`
conventions and a written-out gradient for the mixture (`_MixtureJSD`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from irlhf.losses._checks import (
    Metrics,
    _check_choice,
    _check_float,
    _check_range,
    _check_shape,
    _item,
    _mask_weights,
    _masked_mean,
    _shape,
)


def _check_logits_and_targets(fn: str, logits: Tensor, targets: Tensor) -> None:
    """logits [..., V] floating point with at least 2 dims; targets long, shaped logits[..., 0]."""
    _check_float(fn, "logits", logits)
    if logits.dim() < 2:
        raise ValueError(f"{fn}: logits must be [B, T, V], got shape {_shape(logits)}")
    _check_shape(fn, "targets", targets, _shape(logits)[:-1], "logits.shape[:-1]")
    if targets.dtype != torch.long:
        raise ValueError(f"{fn}: targets must be long, got {targets.dtype}")


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
    _check_logits_and_targets(fn, logits, targets)
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
    to float rounding (tests/losses/test_imitation.py: gradcheck in float64). First derivatives
    only: a backward with create_graph=True raises (the saved tensors are outside the graph)."""

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


def next_token_cross_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Metrics]:
    """Mean next-token cross-entropy over every position (language-model pretraining).

        L = -(1 / N) sum_{(b,t)} log softmax(logits[b, t])[targets[b, t]],   N = B T

    `nll` without a mask, computed by torch's fused `F.cross_entropy` on the flattened
    positions (equal to `nll` to float rounding, not bit for bit): the loss of the real-text
    world's teacher pretraining (`worlds.text.pretrain_lm`).

    Args:
        logits: [B, T, V] unnormalised next-token scores (any leading shape [..., V] works).
        targets: [B, T] long token ids, every one scored.

    Returns:
        (loss, {"loss/lm"}).
    """
    fn = "next_token_cross_entropy"
    _check_logits_and_targets(fn, logits, targets)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss, {"loss/lm": _item(loss)}
