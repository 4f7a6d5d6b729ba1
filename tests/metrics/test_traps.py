"""Trap-entry / trap-exit rates and the two-state model (`irlhf.metrics.traps`), against
hand-computed values: a hand-built two-state automaton (rates constant, so the two-state model
is exact) and a small flip-flop world under the uniform policy (mode chain by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irlhf.metrics.exposure import fit_power_law, occupancy
from irlhf.metrics.traps import (
    measured_regret,
    measured_trap_occupancy,
    trap_rates,
    trap_rates_mc,
    trap_set,
    two_state_occupancy,
)
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies.tabular import TabularPolicy
from irlhf.worlds.automaton import AutomatonSpec, AutomatonWorld
from irlhf.worlds.flipflop import FlipFlopWorld, make_world


def two_state_world(start_trap: float = 0.0) -> AutomatonWorld:
    """State 0 good, 1 trap; token 0 stays, token 1 switches. Good: reward 0; trap: -2. The
    expert stays good and leaves a trap at once."""
    world = object.__new__(AutomatonWorld)
    world.spec = AutomatonSpec(n_states=2, vocab_size=2, horizon=6)
    world.transition = torch.tensor([[0, 1], [1, 0]])
    world.reward_table = torch.tensor([[0.0, 0.0], [-2.0, -2.0]], dtype=torch.float64)
    world.start = torch.tensor([1.0 - start_trap, start_trap], dtype=torch.float64)
    world.is_trap = torch.tensor([False, True])
    world.expert = TabularPolicy(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    return world


def policy(p: float, q: float) -> TabularPolicy:
    return TabularPolicy(torch.tensor([[1 - p, p], [1 - q, q]], dtype=torch.float64))


def test_two_state_rates_are_the_table_and_the_formula_is_the_exact_dp():
    world = two_state_world()
    rates = trap_rates(world, policy(0.2, 0.3))
    assert rates.entry_rate == pytest.approx(0.2) and rates.exit_rate == pytest.approx(0.3)
    assert rates.trap_cost == pytest.approx(2.0) and rates.good_shortfall == pytest.approx(0.0)
    # P_t by hand: 0, 0.2, 0.2 + 0.5 * 0.2 = 0.3, ...; formula pi (1 - 0.5^t), pi = 0.4
    exact = measured_trap_occupancy(world, policy(0.2, 0.3))
    np.testing.assert_allclose(exact[:3], [0.0, 0.2, 0.3])
    np.testing.assert_allclose(two_state_occupancy(0.2, 0.3, 6), exact, rtol=1e-12)
    np.testing.assert_allclose(rates.trap_occupancy(), 0.4 * (1 - 0.5 ** np.arange(6)))
    # the model's regret is the exact regret here (constant rates and costs)
    np.testing.assert_allclose(rates.regret(), measured_regret(world, policy(0.2, 0.3)))
    np.testing.assert_allclose(rates.regret()[:3], [0.0, 0.4, 1.0])


def test_the_formula_from_a_trap_start_matches_a_matrix_power_dp():
    p, q, P0 = 0.05, 0.01, 0.25
    M = np.array([[1 - p, p], [q, 1 - q]])
    d, expected = np.array([1 - P0, P0]), []
    for _ in range(40):
        expected.append(d[1])
        d = d @ M
    np.testing.assert_allclose(two_state_occupancy(p, q, 40, P0), expected, rtol=1e-12)
    world = two_state_world(start_trap=P0)
    np.testing.assert_allclose(measured_trap_occupancy(world, policy(p, q), 40), expected)
    assert trap_rates(world, policy(p, q), 40).start_trap == P0


def test_flipflop_uniform_policy_rates_by_hand():
    world = FlipFlopWorld(vocab_size=4, n_trap_tokens=1, exit_prob=0.25, min_stay=2, horizon=3)
    assert torch.equal(trap_set(world), world.mode > 0)
    uniform = TabularPolicy(torch.full((world.n_states, 4), 0.25, dtype=torch.float64))
    # modes under the uniform policy: good -> depth 1 w.p. 1/4, depth 1 -> depth 2, depth 2 ->
    # good w.p. 1/4. t0: G 1; t1: G 3/4, D1 1/4; t2: G 9/16, D1 3/16, D2 1/4.
    rates = trap_rates(world, uniform)
    assert rates.entry_rate == pytest.approx(0.25)  # one X in 4 tokens, every good state
    # exits: D2 at t2 (1/4) x 1/4 = 1/16, over trap mass 1/4 + 3/16 + 1/4 = 11/16
    assert rates.exit_rate == pytest.approx(1 / 11)
    np.testing.assert_allclose(measured_trap_occupancy(world, uniform), [0, 1 / 4, 7 / 16])
    d = occupancy(world, uniform, 3)
    assert float(d[:, world.mode == 2].sum()) == pytest.approx(1 / 4)
    # the trap cost: every token in a trap costs trap_cost = 2, against the expert's mean reward
    expert = float(
        (
            occupancy(world, world.expert, 3) @ (world.expert.probs * world.reward_table).sum(1)
        ).mean()
    )
    assert rates.trap_cost == pytest.approx(expert + 2.0)


def test_never_entering_a_trap_is_an_undefined_exit_rate_not_nan():
    with pytest.raises(UndefinedMetric, match="exit rate q"):
        trap_rates(two_state_world(), policy(0.0, 0.5))
    with pytest.raises(UndefinedMetric, match="entry rate p"):  # starts trapped, never leaves
        trap_rates(two_state_world(start_trap=1.0), policy(0.5, 0.0))
    assert not np.isnan(two_state_occupancy(0.0, 0.0, 5)).any()
    with pytest.raises(ValueError, match="probability"):
        two_state_occupancy(math.nan, 0.1, 5)


def test_absorbing_rates_give_exponent_two_and_fast_exits_exponent_one():
    lengths = 2 ** np.arange(3, 8)
    absorbing = np.cumsum(2.0 * two_state_occupancy(1e-4, 0.0, 128))
    recovering = np.cumsum(2.0 * two_state_occupancy(1e-2, 0.5, 128))
    assert fit_power_law(lengths, absorbing[lengths - 1]).exponent == pytest.approx(2.0, abs=0.06)
    assert fit_power_law(lengths, recovering[lengths - 1]).exponent == pytest.approx(1.0, abs=0.1)


def test_monte_carlo_rates_of_a_table_agree_with_the_exact_ones():
    """A tabular policy's roll-outs give p, q, c and eps within Monte-Carlo error of the exact
    occupancy-weighted values (the estimator only replaces d_t by visited states)."""
    world = make_world("flipflop-absorbing", horizon=32)
    noisy = world.demonstrator(1.0, 0.2)  # enters traps often enough to estimate q and c
    exact = trap_rates(world, noisy)
    seqs = world.rollout(noisy, 4000, torch.Generator().manual_seed(0))
    probs = noisy.probs[world.states(seqs)[:, 1:]]
    mc = trap_rates_mc(world, seqs, probs)
    assert mc.entry_rate == pytest.approx(exact.entry_rate, rel=0.05)
    assert mc.exit_rate == pytest.approx(exact.exit_rate, rel=0.05)
    assert mc.trap_cost == pytest.approx(exact.trap_cost, rel=0.05)
    assert mc.good_shortfall == pytest.approx(exact.good_shortfall, rel=0.1, abs=0.01)
    assert mc.first_step_entry_rate == pytest.approx(exact.first_step_entry_rate, rel=0.05)
