"""Inverse-RL losses: adversarial imitation and inverse soft-Q learning.

`gail_discriminator` is GAIL's discriminator loss (Ho & Ermon 2016); `airl_logits` AIRL's
discriminator logits f - log pi (Fu et al. 2018, "Learning Robust Rewards with Adversarial
Inverse Reinforcement Learning"); `iq_learn` IQ-Learn's inverse soft-Q objective with its chi^2
regulariser (Garg et al. 2021, "IQ-Learn: Inverse soft-Q Learning for Imitation").
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
