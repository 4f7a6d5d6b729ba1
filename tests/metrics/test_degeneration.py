"""Degeneration metrics against hand-computed examples."""

import pytest
import torch

from irlhf.metrics.degeneration import (
    distinct_n,
    loop_period,
    loop_rate,
    rep_n,
    self_reinforcement,
    seq_rep_n,
    soft_loop_rate,
)
from irlhf.metrics.undefined import UndefinedMetric


def test_seq_rep_and_distinct_on_hand_examples():
    looping = [1, 2, 3, 1, 2, 3, 1, 2]  # bigrams: 12 23 31 12 23 31 12 -> 3 unique of 7
    fresh = [5, 6, 7, 8]  # bigrams: 56 67 78 -> 3 unique of 3
    assert seq_rep_n([looping], 2) == pytest.approx(1 - 3 / 7)
    assert seq_rep_n([fresh], 2) == 0.0
    assert seq_rep_n([looping, fresh], 2) == pytest.approx((1 - 3 / 7) / 2)
    # pooled: 10 bigrams, unique {12, 23, 31, 56, 67, 78} = 6
    assert distinct_n([looping, fresh], 2) == pytest.approx(6 / 10)
    assert distinct_n([[1, 1, 1, 1]], 1) == pytest.approx(1 / 4)


def test_empty_inputs_raise_instead_of_returning_nan():
    """No sequence with 4 tokens: no 4-gram to average over, so no rate (an error, not nan);
    a sequence too short for a 4-gram is simply not a soft loop."""
    for metric in (seq_rep_n, rep_n, distinct_n):
        with pytest.raises(UndefinedMetric, match="no sequence has 4 tokens"):
            metric([[1, 2], [3]], 4)
        with pytest.raises(UndefinedMetric):
            metric([], 4)
    assert seq_rep_n([[1, 2], [1, 1, 1, 1, 1]], 4) == pytest.approx(1 - 1 / 2)  # short skipped
    for metric in (loop_rate, soft_loop_rate):
        with pytest.raises(UndefinedMetric, match="no sequences"):
            metric([])
    assert soft_loop_rate([[1, 1, 1], [5, 5, 5, 5, 5, 5]]) == 0.5  # 5555 x3: rep 2/3 > 0.5
    with pytest.raises(ValueError, match="at least one sentence"):
        self_reinforcement(Echo(), [], max_repeats=2)
    with pytest.raises(ValueError, match="no token to score"):
        self_reinforcement(Echo(), [[1, 2, 3], [4]], max_repeats=2)


def test_rep_n_respects_the_window():
    seq = [1, 2, 9, 9, 9, 1, 2]  # bigram 12 at positions 0 and 5; 99 at 2 and 3
    # all earlier n-grams: repeats = (9,9) at i=3 and (1,2) at i=5 -> 2 of 6
    assert rep_n([seq], 2, window=100) == pytest.approx(2 / 6)
    # window 3 tokens = the 2 previous bigrams: (1,2) at i=5 is too far back -> 1 of 6
    assert rep_n([seq], 2, window=3) == pytest.approx(1 / 6)


def test_loops_are_found_with_their_period():
    assert loop_period([4, 7, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == 3
    assert loop_period([4, 7, 5, 5, 5]) == 1
    assert loop_period([1, 2, 3, 1, 2, 3]) is None  # two copies only, min_repeats = 3
    assert loop_period([1, 2, 3, 1, 2, 3], min_repeats=2) == 3
    assert loop_rate([[1, 2, 1, 2, 1, 2], [1, 2, 3, 4, 5, 6]]) == 0.5
    near_loop = [1, 2, 3, 4] * 15 + [9]  # never exactly periodic at the end
    assert loop_rate([near_loop]) == 0.0 and soft_loop_rate([near_loop]) == 1.0


class Echo:
    """A toy policy that predicts 'the token 3 positions back' with a confidence that grows with
    the number of times the current 3-token pattern has been seen (a self-reinforcing model)."""

    device = torch.device("cpu")

    def next_token_logits(self, seqs):
        tokens = seqs.tokens[0].tolist()
        logits = torch.zeros(1, len(tokens), 5)
        for t in range(3, len(tokens)):
            logits[0, t, tokens[t - 3]] = 0.5 * (t // 3)
        return logits


def test_self_reinforcement_rises_for_a_self_reinforcing_model():
    rows = self_reinforcement(Echo(), [[1, 2, 3]], max_repeats=4)
    assert [r["n_repeats"] for r in rows] == [1, 2, 3, 4]
    tp = [r["tp"] for r in rows]
    assert tp == sorted(tp) and tp[-1] > tp[0]
    # first copy: tokens 2, 3 at positions 1, 2 have no echo -> uniform 1/5
    assert rows[0]["tp"] == pytest.approx(0.2)
    assert rows[0]["ip"] == 0.0 and rows[1]["ip"] == 1.0 and rows[1]["wr"] == 1.0
