"""Exact exposure metrics against brute-force enumeration, and the Monte-Carlo estimator."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from irlhf.metrics.exposure import (
    exact_return,
    exposure_bias,
    exposure_bias_mc,
    fit_power_law,
    occupancy,
)
from irlhf.policies import TabularPolicy
from irlhf.types import Sequences
from irlhf.worlds import AutomatonWorld, make_world


def enumerate_sequences(world, policy, horizon):
    """Every (start, action sequence) with its probability, state path and return."""
    for start in torch.nonzero(world.start).flatten().tolist():
        for actions in itertools.product(range(world.vocab_size), repeat=horizon):
            prob, state, ret, path = float(world.start[start]), start, 0.0, []
            for a in actions:
                path.append(state)
                prob *= float(policy.probs[state, a])
                ret += float(world.reward_table[state, a])
                state = int(world.transition[state, a])
            yield prob, path, ret


def random_policy(world, seed):
    g = torch.Generator().manual_seed(seed)
    return TabularPolicy.from_logits(torch.randn(world.n_states, world.vocab_size, generator=g))


@settings(max_examples=25, deadline=None)
@given(
    n_states=st.integers(2, 5),
    vocab_size=st.integers(2, 3),
    horizon=st.integers(1, 5),
    exit_prob=st.floats(0.0, 1.0),
    seed=st.integers(0, 100),
)
def test_exact_return_and_occupancy_equal_enumeration(
    n_states, vocab_size, horizon, exit_prob, seed
):
    world = AutomatonWorld(
        n_states=n_states,
        vocab_size=vocab_size,
        horizon=horizon,
        exit_prob=exit_prob,
        reward_spread=1.0,
        n_start_states=2,
        seed=seed,
    )
    policy = random_policy(world, seed)
    expected_return = 0.0
    expected_occ = np.zeros((horizon, n_states))
    for prob, path, ret in enumerate_sequences(world, policy, horizon):
        expected_return += prob * ret
        for t, s in enumerate(path):
            expected_occ[t, s] += prob
    assert exact_return(world, policy, horizon) == pytest.approx(expected_return, abs=1e-12)
    assert np.allclose(occupancy(world, policy, horizon).numpy(), expected_occ, atol=1e-12)


def test_exposure_metrics_equal_their_definitions_on_a_tiny_world():
    world = make_world("tiny")
    policy = random_policy(world, 3)
    T = world.horizon
    kl = (world.expert.probs * (world.expert.probs / policy.probs).log()).sum(1)
    eps_steps, r_steps = np.zeros(T), np.zeros(T)
    j_expert, j_model = np.zeros(T), np.zeros(T)
    for p, path, _ in enumerate_sequences(world, world.expert, T):
        eps_steps += p * kl[path].numpy()
    for p, path, _ in enumerate_sequences(world, policy, T):
        r_steps += p * kl[path].numpy()
    for L in range(1, T + 1):
        j_expert[L - 1] = exact_return(world, world.expert, L)
        j_model[L - 1] = exact_return(world, policy, L)
    got = exposure_bias(world, policy)
    Ls = np.arange(1, T + 1)
    eps = np.cumsum(eps_steps) / Ls
    R = np.cumsum(r_steps)
    assert np.allclose(got.eps, eps) and np.allclose(got.R, R)
    assert np.allclose(got.acc_err, R / eps)
    assert np.allclose(got.pct_ex_acc_err, (R - Ls * eps) / (Ls * eps) * 100)
    assert np.allclose(got.regret, j_expert - j_model)
    assert got.acc_err[0] == pytest.approx(1.0)  # at L = 1 both see the start distribution


def test_expert_has_no_exposure_bias():
    world = make_world("absorbing", horizon=32)
    got = exposure_bias(world, world.expert)
    assert np.allclose(got.eps, 0) and np.allclose(got.R, 0) and np.allclose(got.regret, 0)


def test_power_law_fit_recovers_a_known_exponent():
    L = np.array([8, 16, 32, 64, 128])
    rng = np.random.default_rng(0)
    curves = 0.01 * L**1.8 * np.exp(rng.normal(0, 0.05, size=(6, len(L))))
    fit = fit_power_law(L, curves)
    assert fit.ci_low < 1.8 < fit.ci_high and abs(fit.exponent - 1.8) < 0.05
    exact = fit_power_law(L, 3 * L**1.0)
    assert exact.exponent == pytest.approx(1.0) and exact.prefactor == pytest.approx(3.0)
    with pytest.raises(ValueError, match="positive"):
        fit_power_law(L, -L)


def test_power_law_interval_over_three_seeds_keeps_its_coverage():
    """Seeds with their own exponent (1.8 + N(0, 0.1)) and noise: over 400 simulated studies of
    3 seeds the 95% interval holds 1.8 in at least 90% (measured 0.95; the percentile bootstrap
    it replaced held it in 0.76: about the range of the per-seed slopes)."""
    L = np.array([8, 16, 32, 64, 128])
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(400):
        exponents = 1.8 + rng.normal(0, 0.1, size=(3, 1))
        fit = fit_power_law(L, L**exponents * np.exp(rng.normal(0, 0.05, size=(3, len(L)))))
        hits += fit.ci_low < 1.8 < fit.ci_high
    assert hits / 400 >= 0.9, hits / 400


class TableAsLM:
    """A tabular policy seen through the neural-policy interface (tokens in, logits out)."""

    device = torch.device("cpu")

    def __init__(self, world, policy):
        self.world, self.policy = world, policy

    def next_token_logits(self, seqs):
        return self.policy.probs[self.world.states(seqs)].log()

    def sample(self, prompts, max_new_tokens, generator):
        state = prompts[:, 0] - self.world.vocab_size
        actions = []
        for _ in range(max_new_tokens):
            a = self.policy.sample(state, generator)
            actions.append(a)
            state = self.world.transition[state, a]
        return Sequences.from_prompt_and_completion(prompts, torch.stack(actions, 1))


def test_monte_carlo_estimate_agrees_with_exact_values():
    world = make_world("spread", horizon=32)
    policy = random_policy(world, 0).mix(world.expert, 0.7)
    exact = exposure_bias(world, policy)
    mc = exposure_bias_mc(world, TableAsLM(world, policy), 4000, torch.Generator().manual_seed(1))
    for got, want, se in [(mc.regret, exact.regret, mc.regret_se), (mc.R, exact.R, mc.R_se)]:
        assert (se > 0).all()
        assert (np.abs(got - want) / se).max() < 4.5
    assert np.allclose(mc.eps, exact.eps, rtol=0.1)


def test_optimal_return_is_the_best_of_every_deterministic_sequence():
    from irlhf.metrics.exposure import optimal_return

    world = make_world("tiny", reward_spread=1.0, n_start_states=1, seed=4)
    start = int(world.start.argmax())
    best = -np.inf
    for actions in itertools.product(range(world.vocab_size), repeat=world.horizon):
        state, ret = start, 0.0
        for a in actions:
            ret += float(world.reward_table[state, a])
            state = int(world.transition[state, a])
        best = max(best, ret)
    assert optimal_return(world) == pytest.approx(best)
    assert optimal_return(world) >= exact_return(world, world.expert) - 1e-12
