"""Neural IQ-Learn: Q, V and the implied reward against the network's logits, the offline loss
without the chi^2 term equal to alpha times behaviour cloning's NLL, and the learner reaching
behaviour cloning's true return in the tiny automaton world (exact returns by enumeration)."""

from __future__ import annotations

import pytest
import torch
from neural_irl_helpers import enumerated_return, tiny_learner

from irlhf import losses
from irlhf.algorithms.neural_iq_learn import (
    NeuralIQLearnConfig,
    implied_rewards,
    iq_loss,
    soft_q_and_values,
    train_neural_iq_learn,
)
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.worlds import Demonstrations, make_world


def _setup(seed: int = 0):
    world = make_world("spread", horizon=5)
    policy = tiny_learner(world, seed)
    seqs = world.rollout(world.expert, 4, torch.Generator().manual_seed(seed))  # (4, 6)
    return world, policy, seqs


def test_q_and_values_are_the_scaled_logits_and_their_logsumexp() -> None:
    _, policy, seqs = _setup()
    alpha, gamma = 0.5, 0.9
    with torch.no_grad():
        q, v, v_next = soft_q_and_values(policy, seqs, alpha)
        logits = policy.next_token_logits(seqs)  # (B, T, A): position t scores token t
    C = seqs.length - 1
    assert q.shape == v.shape == v_next.shape == (4, C)
    for t in range(1, seqs.length):
        row = logits[:, t]  # the prefix before token t
        token = seqs.tokens[:, t]
        torch.testing.assert_close(q[:, t - 1], alpha * row.gather(1, token[:, None]).squeeze(1))
        torch.testing.assert_close(v[:, t - 1], alpha * torch.logsumexp(row, dim=1))
    torch.testing.assert_close(v_next[:, :-1], v[:, 1:])  # V(s_{t+1}) is the next V(s_t)
    # pi = softmax(Q / alpha) is the policy itself: Q - V = alpha log pi
    torch.testing.assert_close(q - v, alpha * policy.log_probs(seqs)[:, 1:], atol=1e-5, rtol=1e-5)
    reward = implied_rewards(policy, seqs, alpha, gamma)
    assert reward.shape == seqs.tokens.shape and (reward[:, 0] == 0).all()
    torch.testing.assert_close(reward[:, 1:], q - gamma * v_next)


def test_offline_loss_without_chi2_is_alpha_times_the_bc_nll() -> None:
    """-E[Q - gamma V'] + E[V - gamma V'] = -E[Q - V] = -alpha E[log pi(a | s)]."""
    _, policy, seqs = _setup()
    config = NeuralIQLearnConfig(alpha=0.7, divergence="none")
    loss, metrics = iq_loss(policy, seqs, None, config)
    nll, _ = losses.nll(policy.next_token_logits(seqs)[:, 1:], seqs.tokens[:, 1:])
    torch.testing.assert_close(loss, 0.7 * nll, atol=1e-5, rtol=1e-5)
    assert set(metrics) >= {"loss/iq", "iq/reward_expert", "iq/chi2_term"}


def test_online_loss_pools_the_learners_values() -> None:
    """With learner sequences the value term averages V(s) - gamma V(s') over both batches."""
    world, policy, seqs = _setup()
    learner = policy.sample(world.sample_prompts(3, torch.Generator()), 5, torch.Generator())
    config = NeuralIQLearnConfig(gamma=0.9)
    _, metrics = iq_loss(policy, seqs, learner, config)
    with torch.no_grad():
        _, v_e, vn_e = soft_q_and_values(policy, seqs, config.alpha)
        _, v_l, vn_l = soft_q_and_values(policy, learner, config.alpha)
    pooled = torch.cat([(v_e - 0.9 * vn_e).flatten(), (v_l - 0.9 * vn_l).flatten()]).mean()
    assert metrics["iq/value_term"] == pytest.approx(pooled.item(), rel=1e-5)


def test_offline_iq_learn_reaches_behaviour_clonings_return() -> None:
    """1000 demonstrations, 200 steps each, seeds 0..2, exact J by enumeration. Measured (seeds
    0..3, alpha 0.1): IQ-Learn -0.75, -0.78, -0.85, -0.83 vs BC -0.74, -0.75, -0.80, -0.77
    (start ~ -2.6, demonstrator -0.79): IQ-Learn trails BC by 0.01-0.06 (at alpha 1: 0.03-0.07).
    Asked: within 0.15 of BC and a gain > 1.5 over the start on every seed."""
    world = make_world("tiny")
    dynamics = world.dynamics()
    for seed in range(3):
        demos = Demonstrations.collect(world, 1000, torch.Generator().manual_seed(seed))
        j_start = enumerated_return(world, tiny_learner(world, seed))
        config = NeuralIQLearnConfig(rounds=10, steps_per_round=20)
        trained = train_neural_iq_learn(
            tiny_learner(world, seed), demos, dynamics, config, torch.Generator().manual_seed(seed)
        )
        iq, records = trained.policy, trained.records
        bc = train_sft(
            tiny_learner(world, seed),
            demos,
            dynamics,
            SFTConfig(steps=200, batch_size=32),
            torch.Generator().manual_seed(seed),
        ).policy
        j_iq, j_bc = enumerated_return(world, iq), enumerated_return(world, bc)
        assert j_iq > j_bc - 0.15, (seed, j_iq, j_bc)
        assert j_iq > j_start + 1.5, (seed, j_start, j_iq)
        assert len(records) == 10


@pytest.mark.slow
def test_online_iq_learn_learns_from_a_blank_start() -> None:
    """Online (learner rollouts in the value term): measured at the default alpha 0.1 -0.82,
    -1.01 (seeds 0, 1; at alpha 1: -1.03, -0.98) against BC's -0.74, -0.75 on the same data:
    online trails BC by 0.1-0.3 at this budget. Asked: a gain > 1.2 over the start on 2 seeds
    (not parity with BC)."""
    world = make_world("tiny")
    for seed in range(2):
        demos = Demonstrations.collect(world, 1000, torch.Generator().manual_seed(seed))
        j_start = enumerated_return(world, tiny_learner(world, seed))
        config = NeuralIQLearnConfig(online=True, rounds=10, steps_per_round=20)
        iq = train_neural_iq_learn(
            tiny_learner(world, seed),
            demos,
            world.dynamics(),
            config,
            torch.Generator().manual_seed(seed),
        ).policy
        assert enumerated_return(world, iq) > j_start + 1.2, seed
