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
from irlhf.metrics.undefined import UndefinedMetric
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
    broken = LookupRewardModel([0.0, math.nan, 2.0, 1.0])
    with pytest.raises(ValueError, match="nan"):
        comparison_accuracy(broken, comparisons)  # a nan margin used to count as "wrong"


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
    with pytest.raises(UndefinedMetric, match="predicted reward is constant"):
        reward_correlation(TabularRewardModel(world.dynamics()), world, seqs)
    with pytest.raises(UndefinedMetric, match=">= 2 sequences"):
        reward_correlation(true_reward_model(world), world, seqs[:1])


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


def test_sequence_kl_is_inf_where_the_reference_has_a_zero_the_policy_reaches_and_never_nan():
    """tiny world: the greedy expert gives 0 to the expert's other token at every state, so
    KL(expert || greedy) = +inf from the first step (was nan: 0 * inf over unvisited states).
    KL(greedy || expert) is finite: the greedy policy's support is inside the expert's. A
    reference that is 0 only at a state the policy never reaches adds 0."""
    world = make_world("tiny")
    greedy = world.expert.with_temperature(0)
    assert sequence_kl(world, world.expert, greedy) == math.inf
    _, p = enumerate_sequences(world, greedy)
    _, q = enumerate_sequences(world, world.expert)
    support = p > 0
    exact = float((p[support] * (p[support] / q[support]).log()).sum())
    assert sequence_kl(world, greedy, world.expert) == pytest.approx(exact, rel=1e-10)
    # state 0 is never reached: the start is state 1, and states 1 and 2 lead only to 1 and 2
    assert world.start.tolist() == [0.0, 1.0, 0.0]
    assert world.transition[1:].tolist() == [[1, 2], [1, 2]]
    probs = world.expert.probs.clone()
    probs[0] = torch.tensor([1.0, 0.0])  # 0 where the expert's state-0 row is positive
    assert sequence_kl(world, world.expert, TabularPolicy(probs)) == 0.0


def test_win_rate_needs_two_pairs_for_its_standard_error():
    world = make_world("spread", horizon=4)
    with pytest.raises(ValueError, match="n >= 2"):
        win_rate(world, world.expert, world.expert, 1, torch.Generator().manual_seed(0))
