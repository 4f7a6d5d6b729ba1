"""MaxEnt IRL: the exact solver and counts against references, count matching, and it learning."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from irlhf.algorithms.maxent_irl import (
    MaxEntIRLConfig,
    TableAdam,
    feature_counts,
    maxent_irl,
    pair_counts,
    start_distribution,
    train_maxent_irl,
)
from irlhf.algorithms.sft import train_sft
from irlhf.metrics.exposure import exposure_bias
from irlhf.planning import soft_optimal_policy
from irlhf.policies import TabularPolicy
from irlhf.worlds import Demonstrations, make_world

pytestmark = pytest.mark.usefixtures("one_thread")


def small_world(**knobs):
    return make_world("absorbing", n_states=12, vocab_size=6, horizon=16, **knobs)


def test_feature_counts_equal_enumeration_over_every_sequence():
    """Exact DP counts vs the sum over all V^H sequences of P(sequence) x its pair counts."""
    world = make_world("tiny")
    policy = world.demonstrator(temperature=1.5)
    start = int(world.start.argmax())
    expected = torch.zeros(world.n_states, world.vocab_size, dtype=torch.float64)
    for actions in itertools.product(range(world.vocab_size), repeat=world.horizon):
        state, prob, visits = start, 1.0, []
        for a in actions:
            prob *= float(policy.probs[state, a])
            visits.append((state, a))
            state = int(world.transition[state, a])
        for s, a in visits:
            expected[s, a] += prob
    counts = feature_counts(policy, world.dynamics(), world.start, world.horizon)
    assert torch.allclose(counts, expected, atol=1e-12)
    assert abs(float(counts.sum()) - world.horizon) < 1e-12


def test_empirical_pair_counts_converge_to_the_exact_counts():
    world = small_world()
    dynamics = world.dynamics()
    demos = Demonstrations.collect(world, 4000, torch.Generator().manual_seed(1))
    empirical = pair_counts(demos.sequences, dynamics) / demos.n
    start = start_distribution(demos.sequences, dynamics)
    assert torch.allclose(start, world.start, atol=0.03)
    exact = feature_counts(world.expert, dynamics, world.start, world.horizon)
    tv = 0.5 * float((empirical - exact).abs().sum()) / world.horizon
    assert tv < 0.02
    assert float(empirical.sum()) == pytest.approx(world.horizon)


def test_the_true_reward_is_a_fixed_point():
    """The soft-optimal learner for the true reward is the expert: zero count gap."""
    world = small_world(seed=3)
    s, dynamics = world.spec, world.dynamics()
    policy = soft_optimal_policy(dynamics, world.reward_table, s.alpha, s.gamma)
    assert torch.allclose(policy.probs, world.expert.probs, atol=1e-9)
    counts = feature_counts(world.expert, dynamics, world.start, world.horizon)
    config = MaxEntIRLConfig(alpha=s.alpha, gamma=s.gamma, steps=0)
    records = maxent_irl(counts, world.start, dynamics, config, world.horizon).records
    assert records[0]["maxent/count_tv"] > 0.5  # zero reward = uniform learner: far off


@pytest.mark.parametrize(
    ("preset", "knobs"),
    [("tiny", {}), ("absorbing", {"n_states": 12, "vocab_size": 6, "horizon": 16})],
)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_maxent_from_exact_counts_matches_the_demonstrator_occupancy(preset, knobs, optimizer):
    world = make_world(preset, **knobs)
    dynamics = world.dynamics()
    demonstrator = world.demonstrator(temperature=1.0)
    counts = feature_counts(demonstrator, dynamics, world.start, world.horizon)
    lr = 0.05 if optimizer == "adam" else 1.0
    config = MaxEntIRLConfig(alpha=world.spec.alpha, steps=300, lr=lr, optimizer=optimizer)
    trained = maxent_irl(counts, world.start, dynamics, config, world.horizon)
    policy, records, reward = trained.policy, trained.records, trained.learned
    learner = feature_counts(policy, dynamics, world.start, world.horizon)
    tv = 0.5 * float((learner - counts).abs().sum()) / world.horizon
    assert tv < 0.02
    assert records[-1]["maxent/count_tv"] == pytest.approx(tv)
    assert records[-1]["maxent/demo_nll"] < records[0]["maxent/demo_nll"]
    assert reward.shape == (world.n_states, world.vocab_size)


def test_l2_keeps_the_reward_small():
    """At a fixed point of the penalised ascent, l2 * w = count gap, so |w| <= 1 / l2."""
    world = small_world()
    dynamics = world.dynamics()
    counts = feature_counts(world.expert, dynamics, world.start, world.horizon)
    free = MaxEntIRLConfig(steps=200)
    reward_free = maxent_irl(counts, world.start, dynamics, free, world.horizon).learned
    reward_l2 = maxent_irl(
        counts, world.start, dynamics, free.model_copy(update={"l2": 2.0}), world.horizon
    ).learned
    assert float(reward_l2.abs().max()) <= 0.5 + 1e-3
    assert float(reward_l2.norm()) < float(reward_free.norm())


def test_table_adam_matches_the_closed_form_first_step():
    adam = TableAdam(lr=0.1)
    param = adam.step(torch.zeros(3), torch.tensor([2.0, -0.5, 0.0]))
    # Step 1: m_hat = g, v_hat = g^2, so the update is -lr * sign(g) (0 where g = 0).
    assert torch.allclose(param, torch.tensor([-0.1, 0.1, 0.0]), atol=1e-6)


def test_maxent_irl_regret_is_below_bc_in_the_absorbing_world():
    """Paired over 4 seeds: one-sided paired t-test on log regret at the full horizon.
    The learner sees traps only as states its own occupancy visits and the demonstrations do not;
    the reward learned there makes it leave them, which BC never learns."""
    bc_regret, irl_regret = [], []
    for seed in range(4):
        world = make_world("absorbing", seed=seed, horizon=64)
        demos = Demonstrations.collect(world, 50, torch.Generator().manual_seed(seed))
        blank = TabularPolicy.uniform(world.n_states, world.vocab_size)
        bc = train_sft(blank, demos, world.dynamics()).policy
        irl = train_maxent_irl(blank, demos, world.dynamics(), MaxEntIRLConfig(steps=60)).policy
        bc_regret.append(exposure_bias(world, bc).regret[-1])
        irl_regret.append(exposure_bias(world, irl).regret[-1])
    test = stats.ttest_rel(np.log(irl_regret), np.log(bc_regret), alternative="less")
    assert test.pvalue < 0.01, (bc_regret, irl_regret)
