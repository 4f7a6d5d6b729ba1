"""SFT and DAgger in the automaton world: recovery of the expert and DAgger's lower regret."""

import numpy as np
import torch
from scipy import stats

from irlhf.algorithms.dagger import DAggerConfig, train_dagger
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.metrics.exposure import exact_return, exposure_bias, occupancy
from irlhf.policies import TabularPolicy
from irlhf.worlds import Demonstrations, ExpertOracle, make_world


def blank(world):
    return TabularPolicy.uniform(world.n_states, world.vocab_size)


def test_bc_on_plentiful_expert_data_recovers_the_expert():
    world = make_world("spread", seed=1)
    demos = Demonstrations.collect(world, 20_000, torch.Generator().manual_seed(0))
    bc, _ = train_sft(blank(world), demos, world.dynamics(), SFTConfig(smoothing=0.0))
    # Where a state is visited n times the empirical row's TV error is about
    # 0.5 * sqrt(2 V / (pi n)); from n = 5,000 visits on (V = 16) that is below 0.023.
    visits = demos.n * occupancy(world, world.expert, world.horizon).sum(0)
    well_visited = visits > 5_000
    assert well_visited.sum() >= 5
    tv = 0.5 * (bc.probs - world.expert.probs).abs().sum(1)
    assert tv[well_visited].max() < 0.05
    gap = abs(exact_return(world, bc) - exact_return(world, world.expert))
    assert gap < 0.02 * abs(exact_return(world, world.expert)) + 0.05


def test_dagger_regret_is_below_bc_in_the_absorbing_world():
    """Paired over 6 seeds: one-sided paired t-test on log regret at the full horizon."""
    bc_regret, dagger_regret = [], []
    for seed in range(6):
        world = make_world("absorbing", seed=seed, horizon=64)
        g = torch.Generator().manual_seed(seed)
        demos = Demonstrations.collect(world, 50, g)
        bc, _ = train_sft(blank(world), demos, world.dynamics())
        dagger, _ = train_dagger(
            blank(world), demos, ExpertOracle(world), world.dynamics(), DAggerConfig(rounds=4), g
        )
        bc_regret.append(exposure_bias(world, bc).regret[-1])
        dagger_regret.append(exposure_bias(world, dagger).regret[-1])
    test = stats.ttest_rel(np.log(dagger_regret), np.log(bc_regret), alternative="less")
    assert test.pvalue < 0.01, (bc_regret, dagger_regret)


def test_soft_label_dagger_counts_queries_and_matches_the_expert_where_labelled():
    world = make_world("recoverable", horizon=16)
    g = torch.Generator().manual_seed(0)
    demos = Demonstrations.collect(world, 10, g)
    oracle = ExpertOracle(world)
    config = DAggerConfig(rounds=2, rollouts_per_round=10, labels="soft", lmbda=1.0)
    policy, records = train_dagger(blank(world), demos, oracle, world.dynamics(), config, g)
    assert oracle.queries == (10 + 2 * 10) * world.horizon
    assert records[-1]["oracle/queries"] == oracle.queries
    # With soft labels and no smoothing, every labelled state gets exactly the expert's row.
    exact, _ = train_dagger(
        blank(world),
        demos,
        ExpertOracle(world),
        world.dynamics(),
        DAggerConfig(rounds=0, labels="soft", fit=SFTConfig(smoothing=0.0)),
        g,
    )
    seen = world.states(demos.sequences)[:, 1:].unique()
    assert torch.allclose(exact.probs[seen], world.expert.probs[seen])
    assert policy.probs.shape == world.expert.probs.shape
