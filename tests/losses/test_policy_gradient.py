"""ppo_clip, clipped_value_loss, whiten, rloo_advantages, gae and kl_penalty by hand, their
limits (lambda 0 / 1, constant rewards, unbiased KL estimators), and their argument checks."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from irlhf.losses import (
    clipped_value_loss,
    gae,
    kl_penalty,
    ppo_clip,
    rloo_advantages,
    whiten,
)

from .helpers import TOL, assert_float_metrics, close, finite_floats, kl_by_hand, t

# ---------------------------------------------------------------------------------------------
# ppo_clip
# ---------------------------------------------------------------------------------------------


def test_ppo_clip_per_token_hand_values() -> None:
    # ratios 1.5, 0.5, 1.1; advantages 1, 1, -2; eps = 0.2
    logprobs = t([[math.log(1.5), math.log(0.5), math.log(1.1)]])
    old = t([[0.0, 0.0, 0.0]])
    loss, metrics = ppo_clip(logprobs, old, t([[1.0, 1.0, -2.0]]), clip_eps=0.2)
    # min(1.5 * 1, 1.2 * 1) = 1.2; min(0.5, 0.8) = 0.5; min(1.1 * -2, 1.1 * -2) = -2.2
    assert close(loss, -(1.2 + 0.5 - 2.2) / 3)
    assert close(metrics["loss/policy"], -(1.2 + 0.5 - 2.2) / 3)
    assert close(metrics["ppo/clipfrac"], 2 / 3)
    approx_kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + (0.1 - math.log(1.1))) / 3
    assert close(metrics["ppo/approx_kl"], approx_kl)
    assert close(metrics["ppo/ratio_mean"], (1.5 + 0.5 + 1.1) / 3)
    assert_float_metrics(metrics)


def test_ppo_clip_per_sequence_advantages_broadcast() -> None:
    # ratios [[1.5, 0.5], [1.1, 0.5]], advantages per sequence [1, -1]
    logprobs = t([[math.log(1.5), math.log(0.5)], [math.log(1.1), math.log(0.5)]])
    old = torch.zeros_like(logprobs)
    loss, metrics = ppo_clip(logprobs, old, t([1.0, -1.0]), clip_eps=0.2)
    # 1.2, 0.5, min(-1.1, -1.1) = -1.1, min(-0.5, -0.8) = -0.8
    assert close(loss, -(1.2 + 0.5 - 1.1 - 0.8) / 4)
    assert close(metrics["ppo/clipfrac"], 3 / 4)
    per_token, _ = ppo_clip(logprobs, old, t([[1.0, 1.0], [-1.0, -1.0]]), clip_eps=0.2)
    assert close(loss, float(per_token))


def test_ppo_clip_ratio_one_gives_minus_mean_advantage() -> None:
    logprobs = t([[-1.0, -2.0, -0.5]])
    loss, metrics = ppo_clip(logprobs, logprobs.clone(), t([[2.0, -1.0, 5.0]]), clip_eps=0.1)
    assert close(loss, -(2.0 - 1.0 + 5.0) / 3)
    assert metrics["ppo/clipfrac"] == 0.0
    assert close(metrics["ppo/approx_kl"], 0.0)
    assert close(metrics["ppo/ratio_mean"], 1.0)


def test_ppo_clip_mask_excludes_positions() -> None:
    logprobs = t([[0.0, 500.0]]).requires_grad_()  # garbage at the masked position
    old = t([[0.0, -500.0]])
    mask = torch.tensor([[True, False]])
    loss, metrics = ppo_clip(logprobs, old, t([[3.0, 1e9]]), clip_eps=0.2, mask=mask)
    assert close(loss, -3.0)
    assert metrics["ppo/clipfrac"] == 0.0
    loss.backward()
    assert logprobs.grad is not None and torch.isfinite(logprobs.grad).all()
    assert logprobs.grad[0, 1] == 0.0


def test_ppo_clip_errors() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(
        ValueError,
        match=re.escape("ppo_clip: old_logprobs must have shape (2, 3) like logprobs, got (2, 4)"),
    ):
        ppo_clip(x, torch.zeros(2, 4), x, 0.2)
    with pytest.raises(ValueError, match=re.escape("ppo_clip: advantages must have shape (2,)")):
        ppo_clip(x, x, torch.zeros(3), 0.2)
    with pytest.raises(ValueError, match=re.escape("ppo_clip: advantages must have shape (2, 3)")):
        ppo_clip(x, x, torch.zeros(3, 2), 0.2)
    with pytest.raises(ValueError, match=re.escape("ppo_clip: clip_eps must be in (0.0, inf)")):
        ppo_clip(x, x, x, 0.0)


# ---------------------------------------------------------------------------------------------
# clipped_value_loss and whiten
# ---------------------------------------------------------------------------------------------


def test_clipped_value_loss_by_hand() -> None:
    values = torch.tensor([[0.0, 1.0, 0.5]])
    old = torch.tensor([[0.0, 0.0, 0.4]])
    returns = torch.tensor([[9.0, 0.0, 1.0]])
    mask = torch.tensor([[False, True, True]])
    loss, metrics = clipped_value_loss(values, old, returns, 0.2, mask)
    # token 1: max((1 - 0)^2, (0.2 - 0)^2) = 1; token 2: max(0.5^2, (0.5 - 1)^2) = 0.25
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.25) / 2)
    assert metrics["value/clipfrac"] == pytest.approx(0.5)
    assert metrics["value/mean"] == pytest.approx((1.0 + 0.5) / 2)
    assert_float_metrics(metrics)


def test_clipped_value_loss_takes_the_clipped_error_when_it_is_larger() -> None:
    # V = 2, V_old = 0, R = 3, c = 0.5: unclipped (2 - 3)^2 = 1, clipped (0.5 - 3)^2 = 6.25.
    loss, metrics = clipped_value_loss(t([[2.0]]), t([[0.0]]), t([[3.0]]), 0.5, t([[1.0]]))
    assert close(loss, 0.5 * 6.25)
    assert close(metrics["value/clipfrac"], 1.0)


def test_whiten_by_hand() -> None:
    mask = torch.tensor([[False, True, True]])
    white = whiten(torch.tensor([[5.0, 1.0, 3.0]]), mask)
    # masked mean 2, population std 1: (1 - 2) / 1, (3 - 2) / 1; 0 at the masked position
    assert white[0, 0] == 0 and white[0, 1:].tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)
    white = whiten(t([[1.0, 2.0, 6.0]]), torch.ones(1, 3))
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3)
    expected = [(x - 3.0) / (std + 1e-8) for x in (1.0, 2.0, 6.0)]
    assert all(close(a, b) for a, b in zip(white[0].tolist(), expected, strict=True))


# ---------------------------------------------------------------------------------------------
# rloo_advantages
# ---------------------------------------------------------------------------------------------


def test_rloo_hand_values() -> None:
    advantages, metrics = rloo_advantages(t([[1.0, 2.0, 6.0], [0.0, 4.0, 2.0]]))
    expected = [
        [1.0 - (2.0 + 6.0) / 2, 2.0 - (1.0 + 6.0) / 2, 6.0 - (1.0 + 2.0) / 2],
        [0.0 - (4.0 + 2.0) / 2, 4.0 - (0.0 + 2.0) / 2, 2.0 - (0.0 + 4.0) / 2],
    ]
    assert torch.allclose(advantages, t(expected), rtol=0, atol=TOL)
    assert close(metrics["rloo/reward_mean"], 15.0 / 6)
    assert close(metrics["rloo/advantage_mean"], 0.0)
    assert_float_metrics(metrics)


def test_rloo_two_samples() -> None:
    advantages, _ = rloo_advantages(t([[3.0, 1.0]]))
    assert advantages.tolist() == [[2.0, -2.0]]


@settings(max_examples=50, deadline=None)
@given(value=finite_floats, k=st.integers(min_value=2, max_value=6))
def test_rloo_constant_rewards_give_zero(value: float, k: int) -> None:
    advantages, _ = rloo_advantages(torch.full((3, k), value, dtype=torch.float64))
    assert torch.allclose(advantages, torch.zeros(3, k, dtype=torch.float64), atol=1e-12)


def test_rloo_errors() -> None:
    with pytest.raises(ValueError, match="rloo_advantages: rewards must have >= 2 samples"):
        rloo_advantages(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="rloo_advantages: rewards must be"):
        rloo_advantages(torch.zeros(4))


# ---------------------------------------------------------------------------------------------
# gae
# ---------------------------------------------------------------------------------------------


def test_gae_hand_values() -> None:
    rewards, values = t([[1.0, 2.0, 3.0]]), t([[0.5, 1.0, 1.5]])
    gamma, lam = 0.9, 0.8
    advantages, metrics = gae(rewards, values, gamma, lam)
    d2 = 3.0 + 0.0 - 1.5  # terminal after the last token
    d1 = 2.0 + 0.9 * 1.5 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2 = d2
    a1 = d1 + 0.9 * 0.8 * a2
    a0 = d0 + 0.9 * 0.8 * a1
    assert torch.allclose(advantages, t([[a0, a1, a2]]), rtol=0, atol=TOL)
    assert close(metrics["gae/advantage_mean"], (a0 + a1 + a2) / 3)
    assert close(metrics["gae/return_mean"], (a0 + 0.5 + a1 + 1.0 + a2 + 1.5) / 3)
    assert_float_metrics(metrics)


def test_gae_bootstrap_value() -> None:
    rewards, values = t([[1.0, 2.0, 3.0]]), t([[0.5, 1.0, 1.5, 2.0]])  # V(s_3) = 2
    advantages, _ = gae(rewards, values, 0.9, 0.8)
    d2 = 3.0 + 0.9 * 2.0 - 1.5
    d1 = 2.0 + 0.9 * 1.5 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    assert torch.allclose(advantages, t([[a0, a1, a2]]), rtol=0, atol=TOL)


def test_gae_mask_makes_padding_terminal() -> None:
    # The third token is padding with garbage reward and value: the episode ends after token 1.
    rewards, values = t([[1.0, 2.0, 1e6]]), t([[0.5, 1.0, -1e6, 7.0]])
    mask = torch.tensor([[True, True, False]])
    advantages, _ = gae(rewards, values, 0.9, 0.8, mask=mask)
    a1 = 2.0 + 0.0 - 1.0
    a0 = (1.0 + 0.9 * 1.0 - 0.5) + 0.72 * a1
    assert torch.allclose(advantages, t([[a0, a1, 0.0]]), rtol=0, atol=TOL)


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value() -> None:
    rewards, values = t([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]), t([[0.5, 1.0, 1.5], [2.0, 0.0, 1.0]])
    advantages, _ = gae(rewards, values, 1.0, 1.0)
    expected = [
        [6.0 - 0.5, 5.0 - 1.0, 3.0 - 1.5],
        [3.5 - 2.0, 3.0 - 0.0, 4.0 - 1.0],
    ]
    assert torch.allclose(advantages, t(expected), rtol=0, atol=TOL)


def test_gae_lambda_zero_is_one_step_td() -> None:
    rewards, values = t([[1.0, 2.0, 3.0]]), t([[0.5, 1.0, 1.5]])
    advantages, _ = gae(rewards, values, 0.9, 0.0)
    expected = [1.0 + 0.9 * 1.0 - 0.5, 2.0 + 0.9 * 1.5 - 1.0, 3.0 - 1.5]
    assert torch.allclose(advantages, t([expected]), rtol=0, atol=TOL)


def test_gae_errors() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=re.escape("gae: values must have shape (2, 3) or (2, 4)")):
        gae(x, torch.zeros(2, 5), 0.9, 0.9)
    with pytest.raises(ValueError, match=re.escape("gae: gamma must be in [0.0, 1.0], got 1.5")):
        gae(x, x, 1.5, 0.9)
    with pytest.raises(ValueError, match="gae: gamma must be in"):
        gae(x, x, -0.1, 0.9)
    with pytest.raises(ValueError, match="gae: lam must be in"):
        gae(x, x, 0.9, 2.0)
    with pytest.raises(
        ValueError, match=re.escape("gae: mask must have shape (2, 3) like rewards")
    ):
        gae(x, x, 0.9, 0.9, mask=torch.ones(3, 2, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# kl_penalty
# ---------------------------------------------------------------------------------------------


def test_kl_penalty_hand_values() -> None:
    logp, logq = t([math.log(0.5)]), t([math.log(0.25)])  # p = 0.5, q = 0.25
    expected = {
        "k1": math.log(2.0),
        "k2": 0.5 * math.log(2.0) ** 2,
        "k3": 0.5 - 1.0 + math.log(2.0),  # q/p - 1 - log(q/p)
        "abs": math.log(2.0),
    }
    for kind, value in expected.items():
        per_token, metrics = kl_penalty(logp, logq, kind)  # type: ignore[arg-type]
        assert close(per_token[0], value), kind
        assert close(metrics["kl/mean"], value), kind
        assert_float_metrics(metrics)


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_kl_penalty_unbiased_estimators_average_to_exact_kl(kind: str) -> None:
    # E_{x ~ p}[k(x)] over all three outcomes equals KL(p || q) for k1 and k3.
    p, q = (0.5, 0.3, 0.2), (0.2, 0.2, 0.6)
    per_token, _ = kl_penalty(t([math.log(x) for x in p]), t([math.log(x) for x in q]), kind)  # type: ignore[arg-type]
    expectation = sum(pi * float(k) for pi, k in zip(p, per_token, strict=True))
    assert close(expectation, kl_by_hand(p, q))


def test_kl_penalty_mask_and_errors() -> None:
    per_token, metrics = kl_penalty(
        t([[0.0, 5.0]]), t([[-1.0, 0.0]]), "k1", mask=torch.tensor([[True, False]])
    )
    assert per_token.tolist() == [[1.0, 5.0]]  # the per-token tensor is not masked
    assert metrics["kl/mean"] == 1.0
    with pytest.raises(ValueError, match=re.escape("kl_penalty: kind must be one of ['k1'")):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kl_penalty: ref_logprobs must have shape"):
        kl_penalty(torch.zeros(2), torch.zeros(3), "k1")
