"""Recovered-reward metrics: invariances (shaping, scale), hand-computed correlations, transfer."""

import math

import numpy as np
import pytest
import torch

from irlhf.metrics.exposure import exact_return, occupancy
from irlhf.metrics.recovered_reward import (
    advantage_correlation,
    demonstrator_states,
    recovered_reward_metrics,
    reward_transfer,
    soft_advantages,
    transfer_policy,
)
from irlhf.metrics.undefined import UndefinedMetricWarning
from irlhf.policies import TabularPolicy
from irlhf.worlds import make_world

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_true_reward_scores_perfectly():
    world = make_world("spread")
    metrics = recovered_reward_metrics(world, world.reward_table, world.expert)
    assert metrics["irl/adv_corr_demo"] == pytest.approx(1.0)
    assert metrics["irl/adv_corr_off"] == pytest.approx(1.0)
    assert metrics["irl/n_demo_states"] + metrics["irl/n_off_states"] == world.n_states
    assert metrics["irl/transfer_return"] == pytest.approx(metrics["irl/expert_return"], abs=1e-8)
    uniform = TabularPolicy.uniform(world.n_states, world.vocab_size)
    assert metrics["irl/uniform_return"] == pytest.approx(exact_return(world, uniform))


def test_shaping_and_scale_leave_the_metrics_unchanged():
    """r + gamma phi(s') - phi(s) (Ng et al. 1999) at the same alpha, and c r at alpha c, have
    the same soft-optimal policy, so the same advantages up to the scale c."""
    world = make_world("spread", seed=2)
    s = world.spec
    phi = torch.randn(world.n_states, generator=torch.Generator().manual_seed(0)).double()
    shaped = world.reward_table + s.gamma * phi[world.transition] - phi.unsqueeze(1)
    assert torch.allclose(
        soft_advantages(world.transition, shaped, s.alpha, s.gamma),
        soft_advantages(world.transition, world.reward_table, s.alpha, s.gamma),
        atol=1e-8,
    )
    scaled = advantage_correlation(world, 3.0 * shaped, world.expert, alpha=3.0 * s.alpha)
    assert scaled["irl/adv_corr_demo"] == pytest.approx(1.0)
    assert scaled["irl/adv_corr_off"] == pytest.approx(1.0)
    expert_return = exact_return(world, world.expert)
    assert reward_transfer(world, shaped) == pytest.approx(expert_return, abs=1e-8)


def test_correlation_is_pearson_over_the_tokens_of_each_state_set():
    world = make_world("spread", seed=1)
    s = world.spec
    noisy = (
        world.reward_table
        + torch.randn(
            world.n_states, world.vocab_size, generator=torch.Generator().manual_seed(3)
        ).double()
    )
    metrics = advantage_correlation(world, noisy, world.expert, threshold=0.01)
    on = occupancy(world, world.expert, world.horizon).mean(dim=0) >= 0.01
    recovered = soft_advantages(world.transition, noisy, s.alpha, s.gamma)
    true = soft_advantages(world.transition, world.reward_table, s.alpha, s.gamma)
    for key, states in [("irl/adv_corr_demo", on), ("irl/adv_corr_off", ~on)]:
        expected = np.corrcoef(recovered[states].flatten(), true[states].flatten())[0, 1]
        assert metrics[key] == pytest.approx(expected, abs=1e-12)
    assert 0.0 < metrics["irl/adv_corr_demo"] < 1.0
    negated = advantage_correlation(world, -world.reward_table, world.expert, threshold=0.01)
    assert negated["irl/adv_corr_demo"] < 0.0


def test_demonstrator_states_exclude_absorbing_traps_and_constant_rewards_give_nan():
    world = make_world("absorbing", horizon=32)
    on = demonstrator_states(world, world.expert)
    assert not bool(on[world.is_trap].any()) and bool(on.any())
    zero = torch.zeros(world.n_states, world.vocab_size, dtype=torch.float64)
    with pytest.warns(UndefinedMetricWarning) as caught:
        metrics = advantage_correlation(world, zero, world.expert)
    assert [str(w.message) for w in caught] == [
        f"irl/adv_corr_{s} is undefined (nan): the recovered advantages are constant there"
        for s in ("demo", "off")
    ]
    assert math.isnan(metrics["irl/adv_corr_demo"]) and math.isnan(metrics["irl/adv_corr_off"])
    # A zero reward re-optimised is the uniform policy.
    assert torch.allclose(transfer_policy(world, zero).probs, torch.full_like(zero, 1 / 64))
    with pytest.raises(ValueError, match="reward must be"):
        advantage_correlation(world, zero[:3], world.expert)
    with pytest.raises(ValueError, match="finite"):
        advantage_correlation(world, zero + math.inf, world.expert)
