"""The Annotator channel: Bradley-Terry preference rates, label noise, budget, pair sampling."""

import math

import pytest
import torch
from scipy import stats

from irlhf.metrics.exposure import exact_return
from irlhf.policies import TabularPolicy
from irlhf.types import Sequences
from irlhf.worlds import BudgetExceeded, make_world
from irlhf.worlds.annotator import Annotator, sample_completions, sample_pairs


def repeated_pair(world, n: int, generator: torch.Generator) -> tuple[Sequences, Sequences]:
    """One pair (a, b) of different true return, repeated n times."""
    a, b = sample_pairs(world.dynamics(), TabularPolicy.uniform(32, 16), 64, generator)
    gaps = (world.true_return(a) - world.true_return(b)).abs()
    i = int(((gaps - 1.5).abs()).argmin())  # a gap near 1.5 reward units: P far from 0 and 1
    rows = torch.full((n,), i)
    return a[rows], b[rows]


@pytest.mark.parametrize(("beta", "flip_prob"), [(1.0, 0.0), (0.4, 0.0), (1.0, 0.2), (0.0, 0.0)])
def test_preference_rate_is_bradley_terry_on_the_true_return(beta, flip_prob):
    world = make_world("spread")
    g = torch.Generator().manual_seed(0)
    n = 4000
    a, b = repeated_pair(world, n, g)
    annotator = Annotator(world, beta=beta, flip_prob=flip_prob)
    comparisons = annotator.compare(a, b, g)
    a_won = int((comparisons.chosen.tokens == a.tokens).all(dim=1).sum())
    dr = float(world.true_return(a[:1]) - world.true_return(b[:1]))
    p = 1 / (1 + math.exp(-beta * dr))
    p = (1 - flip_prob) * p + flip_prob * (1 - p)
    assert annotator.preference_probs(a[:1], b[:1]).item() == pytest.approx(p)
    # Two-sided exact binomial test of the empirical rate against the Bradley-Terry rate.
    assert stats.binomtest(a_won, n, p).pvalue > 1e-3, (a_won / n, p)


def test_half_flipped_labels_are_coin_flips_whatever_the_returns():
    world = make_world("spread")
    g = torch.Generator().manual_seed(1)
    expert = world.rollout(world.expert, 3000, g)
    uniform = world.rollout(TabularPolicy.uniform(32, 16), 3000, g)
    assert bool((world.true_return(expert) > world.true_return(uniform) + 5).float().mean() > 0.9)
    comparisons = Annotator(world, beta=5.0, flip_prob=0.5).compare(expert, uniform, g)
    expert_won = int((comparisons.chosen.tokens == expert.tokens).all(dim=1).sum())
    assert stats.binomtest(expert_won, 3000, 0.5).pvalue > 1e-3


def test_rational_annotator_chooses_the_higher_return():
    world = make_world("spread")
    g = torch.Generator().manual_seed(2)
    a, b = sample_pairs(world.dynamics(), world.demonstrator(10.0), 500, g)
    comparisons = Annotator(world, beta=1e6).compare(a, b, g)
    assert bool(
        (world.true_return(comparisons.chosen) >= world.true_return(comparisons.rejected)).all()
    )
    # chosen and rejected are the same pairs, reordered: same prompts, same multiset of returns.
    assert torch.equal(comparisons.chosen.tokens[:, 0], a.tokens[:, 0])
    pair_sum = world.true_return(a) + world.true_return(b)
    sorted_sum = world.true_return(comparisons.chosen) + world.true_return(comparisons.rejected)
    assert torch.allclose(pair_sum, sorted_sum)


def test_every_comparison_is_counted_against_the_budget():
    world = make_world("spread")
    g = torch.Generator().manual_seed(3)
    a, b = sample_pairs(world.dynamics(), world.expert, 10, g)
    annotator = Annotator(world, budget=25)
    annotator.compare(a, b, g)
    annotator.compare(a, b, g)
    assert annotator.comparisons == 20 and annotator.remaining == 5
    with pytest.raises(BudgetExceeded, match="budget 25 exceeded: 20 used, 10 asked"):
        annotator.compare(a, b, g)
    assert annotator.comparisons == 20  # a refused request costs nothing
    annotator.compare(a[:5], b[:5], g)
    assert annotator.remaining == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"beta": -0.1}, "beta"), ({"budget": 0}, "budget"), ({"flip_prob": 1.5}, "flip_prob")],
)
def test_bad_arguments_give_one_line_errors_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name) as error:
        Annotator(make_world("tiny"), **kwargs)
    assert "\n" not in str(error.value)


def test_pairs_share_prompts_and_sample_the_policy():
    world = make_world("spread", horizon=12)
    g = torch.Generator().manual_seed(4)
    policy = world.demonstrator(5.0)
    a, b = sample_pairs(world.dynamics(), policy, 4000, g)
    assert a.tokens.shape == b.tokens.shape == (4000, 13)
    assert torch.equal(a.tokens[:, 0], b.tokens[:, 0])
    assert not torch.equal(a.tokens, b.tokens)
    # The completions follow the policy: mean return matches the exact return (4 s.e.).
    for seqs in (a, b):
        returns = world.true_return(seqs)
        se = float(returns.std()) / math.sqrt(len(returns))
        assert abs(float(returns.mean()) - exact_return(world, policy, 12)) < 4 * se


def test_sample_completions_follows_a_deterministic_policy_exactly():
    world = make_world("spread", horizon=6)
    greedy = world.expert.with_temperature(0.0)
    g = torch.Generator().manual_seed(5)
    prompts = world.sample_prompts(50, g)
    seqs = sample_completions(world.dynamics(), greedy, prompts, g)
    states = world.states(seqs)[:, 1:]
    assert torch.equal(seqs.tokens[:, 1:], greedy.probs.argmax(dim=1)[states])
    with pytest.raises(ValueError, match=">= 1"):
        sample_pairs(world.dynamics(), greedy, 0, g)
