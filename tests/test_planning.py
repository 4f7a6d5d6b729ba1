"""Exact tabular planning: soft value iteration and policy iteration by hand and against each
other, the occupancy-step matrix, and the KL-regularised policy's limits and Bellman equations."""

import math

import pytest
import torch

from irlhf.planning import (
    kl_regularised_policy,
    soft_policy_iteration,
    soft_value_iteration,
    state_transitions,
)
from irlhf.policies import TabularPolicy
from irlhf.worlds import make_world


def test_soft_value_iteration_on_one_state_by_hand():
    """One state, two self-loop tokens with rewards 1 and 2: Q(a) = r_a + gamma V and
    V = alpha log sum_a exp(Q(a) / alpha), so V = alpha log(e^(1/alpha) + e^(2/alpha)) / (1 - gamma)
    by both solvers."""
    transition = torch.tensor([[0, 0]])
    reward = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    alpha, gamma = 0.5, 0.9
    value = alpha * math.log(math.exp(1.0 / alpha) + math.exp(2.0 / alpha)) / (1 - gamma)
    for solve in (soft_value_iteration, soft_policy_iteration):
        q, v = solve(transition, reward, alpha, gamma)
        assert v.item() == pytest.approx(value, abs=1e-9)
        assert q.tolist()[0] == pytest.approx([1.0 + gamma * value, 2.0 + gamma * value], abs=1e-9)


def test_state_transitions_by_hand():
    """Two states: from state 0 token 0 stays and token 1 moves to 1; from 1 both go back to 0."""
    transition = torch.tensor([[0, 1], [0, 0]])
    probs = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    step = state_transitions(transition, probs)
    assert step.dtype == torch.float64
    assert torch.equal(step, torch.tensor([[0.25, 0.75], [1.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("preset", ["tiny", "spread", "absorbing"])
def test_soft_policy_iteration_matches_soft_value_iteration(preset):
    world = make_world(preset)
    s = world.spec
    q, v = soft_policy_iteration(world.transition, world.reward_table, s.alpha, s.gamma)
    assert torch.allclose(q, world.expert_q, atol=1e-8)
    assert torch.allclose(v, world.expert_value, atol=1e-8)
    # Any reward and a warm start reach the same fixed point.
    reward = torch.randn(
        world.n_states, world.vocab_size, generator=torch.Generator().manual_seed(0)
    )
    q_ref, _ = soft_value_iteration(world.transition, reward.double(), 0.3, 0.9)
    q_warm, _ = soft_policy_iteration(world.transition, reward, 0.3, 0.9, init_logits=q_ref)
    q_cold, _ = soft_policy_iteration(world.transition, reward, 0.3, 0.9)
    assert torch.allclose(q_cold, q_ref, atol=1e-8) and torch.allclose(q_warm, q_ref, atol=1e-8)


def random_setup(seed: int = 0):
    world = make_world("spread", seed=seed)
    g = torch.Generator().manual_seed(seed)
    reward = torch.randn(world.n_states, world.vocab_size, generator=g, dtype=torch.float64)
    reference = TabularPolicy.from_logits(torch.randn(reward.shape, generator=g))
    return world, reward, reference


def test_a_huge_kl_coefficient_keeps_the_reference():
    world, reward, reference = random_setup()
    policy = kl_regularised_policy(world.dynamics(), reward, reference, kl_coef=1e6, gamma=0.9)
    assert torch.allclose(policy.probs, reference.probs, atol=1e-5)


def test_a_tiny_kl_coefficient_gives_the_reward_model_greedy_policy():
    world, reward, reference = random_setup(1)
    gamma = 0.9
    q = torch.zeros_like(reward)  # hard (max) value iteration under the reward model
    for _ in range(500):
        q = reward + gamma * q.max(dim=1).values[world.transition]
    policy = kl_regularised_policy(world.dynamics(), reward, reference, kl_coef=1e-4, gamma=gamma)
    on_greedy = policy.probs.gather(1, q.argmax(dim=1, keepdim=True)).squeeze(1)
    assert bool((on_greedy > 0.99).all()), on_greedy.min()


def test_myopic_solution_is_the_reference_tilted_by_the_reward():
    """gamma = 0: pi(a|s) = ref(a|s) exp(r(s, a) / kl) / Z(s), by hand."""
    world, reward, reference = random_setup(2)
    policy = kl_regularised_policy(world.dynamics(), reward, reference, kl_coef=0.5, gamma=0.0)
    tilted = reference.probs * torch.exp(reward / 0.5)
    assert torch.allclose(policy.probs, tilted / tilted.sum(dim=1, keepdim=True))


def test_solution_satisfies_the_kl_regularised_soft_bellman_equations():
    world, reward, reference = random_setup(3)
    kl, gamma = 0.7, 0.9
    policy = kl_regularised_policy(world.dynamics(), reward, reference, kl, gamma)
    # V(s) = kl log sum_a ref exp(Q / kl) and Q = r + gamma V(delta): with V from the policy's
    # log ratio, pi = ref exp((Q - V) / kl) must reproduce Q.
    log_ratio = (policy.probs / reference.probs).log()  # = (Q - V) / kl
    value = torch.zeros(world.n_states, dtype=torch.float64)
    for _ in range(600):
        value = kl * torch.logsumexp(
            (reward + gamma * value[world.transition]) / kl + reference.probs.log(), dim=1
        )
    q = reward + gamma * value[world.transition]
    assert torch.allclose(log_ratio, (q - value[:, None]) / kl, atol=1e-8)


def test_kl_regularised_policy_bad_arguments():
    world, reward, reference = random_setup()
    with pytest.raises(ValueError, match="kl_coef"):
        kl_regularised_policy(world.dynamics(), reward, reference, kl_coef=0.0, gamma=0.9)
    with pytest.raises(ValueError, match=r"\[32, 16\]"):
        kl_regularised_policy(world.dynamics(), reward[:5], reference, kl_coef=1.0, gamma=0.9)
