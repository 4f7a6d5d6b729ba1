"""gail_discriminator, airl_logits and iq_learn by hand, masks, and argument checks."""

from __future__ import annotations

import math
import re

import pytest
import torch

from irlhf.losses import (
    airl_logits,
    gail_discriminator,
    iq_learn,
)

from .helpers import assert_float_metrics, close, softplus, t

# ---------------------------------------------------------------------------------------------
# gail_discriminator and airl_logits
# ---------------------------------------------------------------------------------------------


def test_gail_discriminator_hand_values() -> None:
    loss, metrics = gail_discriminator(t([0.0, 2.0]), t([-1.0, 1.0, 3.0]))
    expert = (math.log(2.0) + math.log(1 + math.exp(-2.0))) / 2  # -log sigmoid(x)
    policy = (softplus(-1.0) + softplus(1.0) + softplus(3.0)) / 3  # -log(1 - sigmoid(x))
    assert close(loss, expert + policy)
    assert close(metrics["loss/discriminator"], expert + policy)
    assert metrics["disc/expert_acc"] == 0.5
    assert close(metrics["disc/policy_acc"], 1 / 3)
    assert_float_metrics(metrics)


def test_gail_discriminator_masks() -> None:
    loss, metrics = gail_discriminator(
        t([[0.0, -1e9]]),
        t([[1.0, 1e9]]),
        expert_mask=torch.tensor([[True, False]]),
        policy_mask=t([[1.0, 0.0]]),
    )
    assert close(loss, math.log(2.0) + softplus(1.0))
    assert metrics["disc/policy_acc"] == 0.0
    with pytest.raises(ValueError, match="gail_discriminator: policy_mask must have shape"):
        gail_discriminator(t([0.0]), t([0.0, 1.0]), policy_mask=torch.ones(3, dtype=torch.bool))


def test_airl_logits_hand_values() -> None:
    f, pi = t([1.0, 0.0]), (0.5, 0.25)
    logits, metrics = airl_logits(f, t([math.log(pi[0]), math.log(pi[1])]))
    assert close(logits[0], 1.0 + math.log(2.0))
    assert close(logits[1], math.log(4.0))
    # sigmoid(logit) is D = e^f / (e^f + pi)
    assert close(torch.sigmoid(logits[0]), math.exp(1.0) / (math.exp(1.0) + 0.5))
    assert close(torch.sigmoid(logits[1]), 1.0 / (1.0 + 0.25))
    assert close(metrics["airl/logit_mean"], (1.0 + math.log(2.0) + math.log(4.0)) / 2)
    assert_float_metrics(metrics)
    with pytest.raises(ValueError, match=re.escape("airl_logits: log_pi must have shape (2,)")):
        airl_logits(f, torch.zeros(3, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# iq_learn
# ---------------------------------------------------------------------------------------------

# Expert: two transitions, the second terminal (V(s') = 0). Policy: one transition.
Q_E, V_E, VN_E = t([2.0, 1.0]), t([2.5, 1.5]), t([1.5, 0.0])
V_P, VN_P = t([1.0]), t([0.5])
GAMMA = 0.9


def test_iq_learn_online_chi2_hand_values() -> None:
    loss, metrics = iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA, alpha=0.5)
    r = [2.0 - 0.9 * 1.5, 1.0 - 0.9 * 0.0]  # r = Q - gamma V(s') = [0.65, 1.0]
    softq = -(r[0] + r[1]) / 2
    value = ((2.5 - 0.9 * 1.5) + (1.5 - 0.0) + (1.0 - 0.9 * 0.5)) / 3  # pooled over 3
    chi2 = (r[0] ** 2 + r[1] ** 2) / 2 / (4 * 0.5)
    assert close(loss, softq + value + chi2)
    assert close(metrics["loss/iq"], softq + value + chi2)
    assert close(metrics["iq/reward_expert"], (r[0] + r[1]) / 2)
    assert close(metrics["iq/value_term"], value)
    assert close(metrics["iq/chi2_term"], chi2)
    assert_float_metrics(metrics)


def test_iq_learn_offline_without_regulariser() -> None:
    loss, metrics = iq_learn(Q_E, V_E, VN_E, None, None, GAMMA, divergence="none")
    softq = -((2.0 - 0.9 * 1.5) + 1.0) / 2
    value = ((2.5 - 0.9 * 1.5) + 1.5) / 2  # expert states only
    assert close(loss, softq + value)
    assert metrics["iq/chi2_term"] == 0.0


def test_iq_learn_masks_exclude_positions() -> None:
    garbage = t([1e9])
    loss, _ = iq_learn(
        torch.cat([Q_E, garbage]),
        torch.cat([V_E, garbage]),
        torch.cat([VN_E, garbage]),
        torch.cat([V_P, garbage]),
        torch.cat([VN_P, garbage]),
        GAMMA,
        mask_expert=torch.tensor([True, True, False]),
        mask_policy=torch.tensor([True, False]),
    )
    reference, _ = iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA)
    assert close(loss, float(reference))


def test_iq_learn_errors() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("iq_learn: v_next_expert must have shape (2,) like q_expert, got (3,)"),
    ):
        iq_learn(Q_E, V_E, torch.zeros(3, dtype=torch.float64), V_P, VN_P, GAMMA)
    with pytest.raises(ValueError, match="iq_learn: v_policy and v_next_policy must both"):
        iq_learn(Q_E, V_E, VN_E, V_P, None, GAMMA)
    with pytest.raises(ValueError, match="iq_learn: divergence must be one of"):
        iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA, divergence="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iq_learn: alpha must be in"):
        iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA, alpha=-1.0)
    with pytest.raises(ValueError, match="iq_learn: gamma must be in"):
        iq_learn(Q_E, V_E, VN_E, V_P, VN_P, 1.01)
    with pytest.raises(ValueError, match="iq_learn: mask_policy must have shape"):
        iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA, mask_policy=torch.ones(2, dtype=torch.bool))
