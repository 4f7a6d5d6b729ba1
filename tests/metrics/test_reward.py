"""Reward metrics: hand-computed accuracy and scores, exact sequence KL against enumeration."""

import math

import pytest
import torch

from irlhf.algorithms.best_of_n import enumerate_sequences
from irlhf.algorithms.reward_model import TabularRewardModel
from irlhf.metrics.reward import (
    comparison_accuracy,
    normalised_score,
    reward_correlation,
    reward_correlations,
    sequence_kl,
    win_rate,
)
from irlhf.policies import TabularPolicy
from irlhf.types import Comparisons, Sequences
from irlhf.worlds import make_world


class LookupRewardModel:
    """Scores a sequence by its first completion token: score = table[token]."""

    def __init__(self, table):
        self.table = torch.tensor(table, dtype=torch.float64)

    def score(self, seqs):
        return self.table[seqs.tokens[:, 1]]


def seqs_of(tokens):
    completion = torch.tensor(tokens).unsqueeze(1)
    return Sequences.from_prompt_and_completion(torch.zeros_like(completion), completion)


def true_reward_model(world, sign: float = 1.0) -> TabularRewardModel:
    model = TabularRewardModel(world.dynamics())
    model.tables[0] = sign * world.reward_table
    return model


def test_comparison_accuracy_by_hand_with_ties_counted_half():
    model = LookupRewardModel([0.0, 1.0, 2.0, 1.0])
    # margins: 2 - 0 > 0 (right), 0 - 1 < 0 (wrong), 1 - 1 = 0 (tie), 2 - 1 > 0 (right)
    comparisons = Comparisons(seqs_of([2, 0, 1, 2]), seqs_of([0, 1, 3, 3]))
    assert comparison_accuracy(model, comparisons) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    with pytest.raises(ValueError, match="at least one"):
        comparison_accuracy(model, Comparisons(seqs_of([]), seqs_of([])))


def test_correlation_of_the_true_reward_is_one_and_of_its_negation_minus_one():
    world = make_world("spread", horizon=16)
    g = torch.Generator().manual_seed(0)
    seqs = world.rollout(world.demonstrator(3.0), 300, g)
    assert reward_correlation(true_reward_model(world), world, seqs) == pytest.approx(
        {"pearson": 1.0, "spearman": 1.0}
    )
    negated = reward_correlation(true_reward_model(world, -1.0), world, seqs)
    assert negated == pytest.approx({"pearson": -1.0, "spearman": -1.0})
    both = reward_correlations(true_reward_model(world), world, world.expert, g, n=200)
    assert set(both) == {"rm/pearson_on", "rm/spearman_on", "rm/pearson_off", "rm/spearman_off"}
    assert both["rm/pearson_off"] == pytest.approx(1.0)
    constant = reward_correlation(TabularRewardModel(world.dynamics()), world, seqs)
    assert math.isnan(constant["pearson"])


def test_normalised_score_by_hand():
    assert normalised_score(5.0, j_base=0.0, j_expert=10.0) == 0.5
    assert normalised_score(-2.0, j_base=-2.0, j_expert=4.0) == 0.0
    assert normalised_score(7.0, j_base=-2.0, j_expert=4.0) == 1.5
    with pytest.raises(ValueError, match="j_expert equals j_base"):
        normalised_score(1.0, 3.0, 3.0)


def test_win_rate_against_itself_is_a_half_and_the_expert_beats_uniform():
    world = make_world("spread", horizon=16)
    g = torch.Generator().manual_seed(1)
    rate, se = win_rate(world, world.expert, world.expert, 4000, g)
    assert abs(rate - 0.5) < 4 * se
    uniform = TabularPolicy.uniform(world.n_states, world.vocab_size)
    rate, _ = win_rate(world, world.expert, uniform, 1000, g)
    assert rate > 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_kl_equals_kl_between_enumerated_sequence_distributions(seed):
    world = make_world("tiny", vocab_size=3, horizon=4, n_start_states=2, n_states=5, seed=seed)
    g = torch.Generator().manual_seed(seed)
    policy = TabularPolicy.from_logits(torch.randn(5, 3, generator=g))
    reference = TabularPolicy.from_logits(torch.randn(5, 3, generator=g))
    _, p = enumerate_sequences(world, policy)
    _, q = enumerate_sequences(world, reference)
    exact = float((p * (p / q).log()).sum())
    assert sequence_kl(world, policy, reference) == pytest.approx(exact, rel=1e-10)
    assert sequence_kl(world, policy, policy) == pytest.approx(0.0, abs=1e-12)
    assert sequence_kl(world, policy, reference, horizon=2) < exact
