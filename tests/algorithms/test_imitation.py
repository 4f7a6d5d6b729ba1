"""SFT and DAgger in the automaton world: recovery of the expert and DAgger's lower regret."""

import numpy as np
import pytest
import torch
from scipy import stats
from tabular_helpers import blank

from irlhf.algorithms.dagger import DAggerConfig, train_dagger
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.metrics.exposure import exact_return, exposure_bias, occupancy
from irlhf.worlds import Demonstrations, ExpertOracle, make_world


def test_bc_on_plentiful_expert_data_recovers_the_expert():
    world = make_world("spread", seed=1)
    demos = Demonstrations.collect(world, 20_000, torch.Generator().manual_seed(0))
    bc = train_sft(blank(world), demos, world.dynamics(), SFTConfig(smoothing=0.0)).policy
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
        bc = train_sft(blank(world), demos, world.dynamics()).policy
        dagger = train_dagger(
            blank(world), demos, ExpertOracle(world), world.dynamics(), DAggerConfig(rounds=4), g
        ).policy
        bc_regret.append(exposure_bias(world, bc).regret[-1])
        dagger_regret.append(exposure_bias(world, dagger).regret[-1])
    test = stats.ttest_rel(np.log(dagger_regret), np.log(bc_regret), alternative="less")
    assert test.pvalue < 0.01, (bc_regret, dagger_regret)


def test_soft_label_dagger_counts_queries_and_matches_the_expert_where_labelled():
    world = make_world("recoverable", horizon=16)
    g = torch.Generator().manual_seed(0)
    demos = Demonstrations.collect(world, 10, g)
    oracle = ExpertOracle(world)
    config = DAggerConfig(rounds=2, rollouts_per_round=10, labels="soft", beta0=0.0)
    trained = train_dagger(blank(world), demos, oracle, world.dynamics(), config, g)
    policy, records = trained.policy, trained.records
    assert oracle.queries == (10 + 2 * 10) * world.horizon  # beta = 0: no expert steps
    assert records[-1]["oracle/queries"] == oracle.queries
    # With soft labels and no smoothing, every labelled state gets exactly the expert's row.
    exact = train_dagger(
        blank(world),
        demos,
        ExpertOracle(world),
        world.dynamics(),
        DAggerConfig(rounds=0, labels="soft", fit=SFTConfig(smoothing=0.0)),
        g,
    ).policy
    seen = world.states(demos.sequences)[:, 1:].unique()
    assert torch.allclose(exact.probs[seen], world.expert.probs[seen])
    assert policy.probs.shape == world.expert.probs.shape


class CountingOracle(ExpertOracle):
    """Counts the expert's actions in roll-outs apart from the labels (instrumented here, not
    read from DAgger's own records)."""

    def __init__(self, world) -> None:
        super().__init__(world)
        self.acted: list[int] = []
        self.label_queries = 0

    def act(self, prefixes, rows, generator):
        self.acted.append(int(rows.sum()))
        return super().act(prefixes, rows, generator)

    def label(self, seqs, soft, generator=None, mask=None):
        labels = super().label(seqs, soft, generator, mask)
        self.label_queries += labels.n_labels
        return labels


def test_dagger_rolls_out_the_per_step_mixture_and_charges_each_expert_step():
    """Round r takes the expert's action at a fraction beta_r of its roll-out steps (+- 0.02 over
    200 x 32 steps: sd <= 0.006), and the oracle charges exactly those steps plus the labels."""
    world = make_world("absorbing", horizon=32)
    g = torch.Generator().manual_seed(3)
    demos = Demonstrations.collect(world, 20, g)
    oracle = CountingOracle(world)
    config = DAggerConfig(rounds=3, rollouts_per_round=200, beta0=0.8, beta_decay=0.5)
    records = train_dagger(blank(world), demos, oracle, world.dynamics(), config, g).records
    steps = 200 * world.horizon
    per_round = [sum(oracle.acted[r * world.horizon : (r + 1) * world.horizon]) for r in range(3)]
    for r, acted in enumerate(per_round, start=1):
        assert abs(acted / steps - 0.8 * 0.5 ** (r - 1)) <= 0.02, (r, acted / steps)
    assert oracle.label_queries == 3 * steps  # every visited prefix labelled once
    assert oracle.queries == sum(per_round) + oracle.label_queries
    fractions = [r["dagger/expert_step_fraction"] for r in records if "dagger/beta" in r]
    assert fractions == pytest.approx([a / steps for a in per_round])


def test_beta_1_rollouts_follow_the_expert_occupancy():
    """beta = 1 roll-outs are the expert's own distribution: their state occupancy matches the
    exact expert occupancy (so the expert steps really are the expert's, in the right states)."""
    from irlhf.algorithms.dagger import mixture_rollout

    world = make_world("recoverable", horizon=8, seed=2)
    g = torch.Generator().manual_seed(4)
    seqs, expert_steps = mixture_rollout(
        blank(world), ExpertOracle(world), world.dynamics(), 4000, 1.0, g
    )
    assert bool(expert_steps.all())
    visited = world.states(seqs)[:, -1]  # the state of the last step
    freq = torch.bincount(visited, minlength=world.n_states).double() / 4000
    exact = occupancy(world, world.expert, world.horizon)[-1]
    assert float((freq - exact).abs().sum()) < 0.1  # TV ~ sqrt(S / n) ~ 0.07 at most


def test_neural_dagger_mixture_rollouts_run_on_an_lm_policy():
    from irlhf.algorithms.dagger import mixture_rollout
    from irlhf.policies.causal_lm import CausalLMPolicy

    world = make_world("recoverable", horizon=6)
    student = CausalLMPolicy.tiny(world.token_vocab_size, world.vocab_size, n_layer=1,
                                  n_embd=16, n_head=2, max_length=7)  # fmt: skip
    oracle = ExpertOracle(world)
    g = torch.Generator().manual_seed(5)
    seqs, expert_steps = mixture_rollout(student, oracle, world.dynamics(), 2000, 0.5, g)
    assert seqs.tokens.shape == (2000, 7)
    assert oracle.queries == int(expert_steps.sum())
    assert abs(float(expert_steps.float().mean()) - 0.5) < 0.03  # sd 0.005 over 12,000 steps
    # the expert's steps follow the expert: never a token it gives probability 0
    probs = world.expert_probs(seqs)[:, 1:]
    taken = probs.gather(-1, seqs.tokens[:, 1:, None]).squeeze(-1)
    assert bool((taken[expert_steps] > 0).all())
