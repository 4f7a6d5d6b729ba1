"""Best-of-n: the analytic KL against exact enumeration, the exact distribution, the sampler."""

import itertools
import math

import pytest
import torch
from scipy import stats

from irlhf.algorithms.best_of_n import (
    best_of_n_kl,
    best_of_n_probs,
    best_of_n_sample,
    enumerate_sequences,
)
from irlhf.algorithms.reward_model import TabularRewardModel
from irlhf.policies import TabularPolicy
from irlhf.worlds import make_world


def exact_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(q || p), 0 log 0 = 0."""
    terms = torch.where(q > 0, q * (q.clamp_min(1e-300) / p).log(), torch.zeros_like(q))
    return float(terms.sum())


def test_analytic_kl_values():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_kl(0)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_analytic_kl_matches_exact_enumeration_on_a_tiny_world(n):
    """All 4^4 = 256 sequences of a tiny world, no ties: the exact best-of-n distribution's KL
    to a uniform reference equals log n - (n-1)/n to 1e-3 (the formula is exact in the continuous
    limit; 256 equally likely sequences are close to it). For the non-uniform expert reference it
    is an upper bound (Beirami et al. 2024)."""
    world = make_world("tiny", vocab_size=4, horizon=4)
    scores = torch.randn(256, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    for reference in (TabularPolicy.uniform(world.n_states, 4), world.expert):
        _, p = enumerate_sequences(world, reference)
        assert len(p) == 256 and float(p.sum()) == pytest.approx(1.0)
        kl = exact_kl(p, best_of_n_probs(p, scores, n))
        assert kl <= best_of_n_kl(n) + 1e-12
        if reference is not world.expert:
            assert kl == pytest.approx(best_of_n_kl(n), abs=1e-3)


def test_exact_distribution_with_ties_matches_brute_force_over_all_draws():
    """Every n-tuple of draws, the first maximum kept, against the closed form."""
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    scores = torch.tensor([1.0, 2.0, 2.0, 0.0], dtype=torch.float64)  # a tie at the top
    for n in (1, 2, 3):
        brute = torch.zeros(4, dtype=torch.float64)
        for draws in itertools.product(range(4), repeat=n):
            best = max(draws, key=lambda i: (float(scores[i]), -draws.index(i)))
            brute[best] += math.prod(float(p[i]) for i in draws)
        assert torch.allclose(best_of_n_probs(p, scores, n), brute)
    assert torch.allclose(best_of_n_probs(p, scores, 1), p)
    with pytest.raises(ValueError, match=r"\[M\]"):
        best_of_n_probs(p, scores[:3], 2)


def test_sampler_draws_from_the_exact_best_of_n_distribution():
    """Chi-square goodness of fit of 20,000 best-of-4 samples (reward model = the true reward
    table, with ties) against `best_of_n_probs` over the 16 sequences of the tiny world."""
    world = make_world("tiny")
    reward_model = TabularRewardModel(world.dynamics())
    reward_model.tables[0] = world.reward_table
    seqs, p = enumerate_sequences(world, world.expert)
    exact = best_of_n_probs(p, reward_model.score(seqs), 4)
    g = torch.Generator().manual_seed(0)
    samples = best_of_n_sample(world.dynamics(), world.expert, reward_model, 4, 20_000, g)
    index = (samples.tokens[:, 1:] * torch.tensor([8, 4, 2, 1])).sum(dim=1)  # lexicographic
    observed = torch.bincount(index, minlength=16).double()
    keep = exact > 0
    assert observed[~keep].sum() == 0
    test = stats.chisquare(observed[keep].numpy(), (20_000 * exact[keep]).numpy())
    assert test.pvalue > 1e-3
    # Best-of-n raises the reward model's score over the reference's.
    assert float((exact * reward_model.score(seqs)).sum()) > float(
        (p * reward_model.score(seqs)).sum()
    )
