"""Preference losses: reward modelling and direct preference optimisation.

`bradley_terry` is the Bradley-Terry likelihood of an annotator's choices (Bradley & Terry 1952),
the reward-model loss of RLHF (Christiano et al. 2017; Ouyang et al. 2022). `dpo` is Direct
Preference Optimisation's sigmoid loss (Rafailov et al. 2023), with conservative DPO's label
smoothing (Mitchell 2023).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from irlhf.losses._checks import (
    Metrics,
    _check_float,
    _check_ndim,
    _check_range,
    _check_shape,
    _item,
    _shape,
)


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
