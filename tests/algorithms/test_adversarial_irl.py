"""GAIL and AIRL: discriminator and policy-step identities, and the learner learning."""

import numpy as np
import pytest
import torch
from scipy import stats
from tabular_helpers import blank, spread_outcome

from irlhf.algorithms.adversarial_irl import (
    AdversarialIRLConfig,
    AIRLDiscriminator,
    GAILConfig,
    GAILDiscriminator,
    adversarial_irl,
    train_airl,
    train_gail,
)
from irlhf.algorithms.maxent_irl import pair_counts
from irlhf.planning import kl_regularised_policy, soft_policy_iteration
from irlhf.policies import TabularPolicy
from irlhf.worlds import Demonstrations, make_world

pytestmark = pytest.mark.usefixtures("one_thread")


def test_airl_discriminator_is_one_half_at_the_true_reward_and_value():
    """g = r, h = V* at temperature 1 gives f = Q* - V* = log pi*, so logit = f - log pi* = 0."""
    world = make_world("spread", alpha=1.0)
    disc = AIRLDiscriminator(world.transition, world.vocab_size, world.spec.gamma)
    disc.params = [world.reward_table.clone(), world.expert_value.clone()]
    log_pi = world.expert.probs.log()
    assert torch.allclose(disc.f(), log_pi, atol=1e-9)
    assert disc.logits(log_pi).abs().max() < 1e-9
    assert torch.equal(disc.recovered_reward(), world.reward_table)


def test_gail_rewards_are_softplus_or_the_logit():
    table = torch.tensor([[-2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    for reward, expected in [("softplus", torch.log1p(table.exp())), ("logit", table)]:
        disc = GAILDiscriminator(2, 2, reward)
        disc.params = [table]
        assert torch.allclose(disc.policy_reward(torch.zeros(2, 2)), expected)
        assert torch.allclose(disc.recovered_reward(), expected)


def test_policy_step_identities():
    world = make_world("spread")
    dynamics, gamma = world.dynamics(), world.spec.gamma
    g = torch.Generator().manual_seed(0)
    previous = TabularPolicy.from_logits(torch.randn(world.n_states, world.vocab_size, generator=g))
    # Zero reward and a KL to the previous policy: the previous policy is optimal.
    same = kl_regularised_policy(
        dynamics, torch.zeros_like(world.reward_table), previous, 0.7, gamma
    )
    assert torch.allclose(same.probs, previous.probs, atol=1e-9)
    # Uniform anchor: the soft-optimal policy at temperature kl_coef.
    uniform = TabularPolicy.uniform(world.n_states, world.vocab_size)
    step = kl_regularised_policy(dynamics, world.reward_table, uniform, world.spec.alpha, gamma)
    assert torch.allclose(step.probs, world.expert.probs, atol=1e-8)
    # AIRL: reward f - log pi_prev with KL(pi || pi_prev) at weight 1 = soft-optimal for f.
    f = world.reward_table
    airl = kl_regularised_policy(dynamics, f - previous.probs.log(), previous, 1.0, gamma)
    q, _ = soft_policy_iteration(world.transition, f, 1.0, gamma)
    assert torch.allclose(airl.probs, torch.softmax(q, dim=1), atol=1e-8)


def test_trained_gail_discriminator_is_the_log_density_ratio():
    """With the two means of the BCE loss, the optimal tabular logit on pairs both sides visit
    is log(p_demo(s, a) / p_learner(s, a)) (Goodfellow et al. 2014, with the two batch sizes)."""
    world = make_world("spread", horizon=16)
    dynamics = world.dynamics()
    demos = Demonstrations.collect(world, 100, torch.Generator().manual_seed(0))
    disc = GAILDiscriminator(world.n_states, world.vocab_size)
    config = AdversarialIRLConfig(rounds=1, disc_steps=600, disc_lr=0.2, rollouts_per_round=100)
    summed = adversarial_irl(
        blank(world), demos, dynamics, disc, config, torch.Generator().manual_seed(1)
    ).learned
    assert torch.allclose(summed, torch.nn.functional.softplus(disc.params[0]))  # one round
    learner = dynamics.rollout(blank(world), 100, torch.Generator().manual_seed(1))
    p_demo = pair_counts(demos.sequences, dynamics)
    p_learner = pair_counts(learner, dynamics)
    both = (p_demo > 0) & (p_learner > 0)
    ratio = (p_demo / p_demo.sum()).log() - (p_learner / p_learner.sum()).log()
    assert torch.allclose(disc.params[0][both], ratio[both], atol=0.02)


@pytest.mark.parametrize(
    ("train", "config", "alpha"),
    [
        (train_gail, GAILConfig(rounds=8), 1.0),
        (train_gail, GAILConfig(rounds=8, reward="logit"), 1.0),
        (train_airl, AdversarialIRLConfig(rounds=8), 1.0),
    ],
    ids=["gail-softplus", "gail-logit", "airl"],
)
def test_adversarial_learner_beats_uniform_and_its_reward_ranks_demonstrator_tokens(
    train, config, alpha
):
    """Over 4 seeds: the normalised score (J - J_uniform) / (J_expert - J_uniform) exceeds 0.5
    (one-sided one-sample t-test, p < 0.01), and the recovered reward's soft advantages correlate
    positively with the true ones on demonstrator states (t-test, p < 0.05)."""
    scores, correlations = [], []
    for seed in range(4):
        score, correlation, records = spread_outcome(train, config, seed, alpha)
        scores.append(score)
        correlations.append(correlation)
        assert len(records) == config.rounds
        assert 0.0 <= records[-1]["disc/accuracy"] <= 1.0
        assert not any("true" in key for key in records[-1])
    assert stats.ttest_1samp(scores, 0.5, alternative="greater").pvalue < 0.01, scores
    assert np.all(np.isfinite(correlations))
    assert stats.ttest_1samp(correlations, 0.0, alternative="greater").pvalue < 0.05, correlations
