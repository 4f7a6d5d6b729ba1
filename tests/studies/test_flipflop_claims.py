"""Verdicts and paired gaps of the flip-flop compounding summary, on hand-made inputs."""

import pandas as pd
import pytest

from irlhf.studies.flipflop_claims import claims, paired_gaps


def row(world, algorithm, exponent, lo, hi):
    return {"world": world, "learner": "causal_lm", "algorithm": algorithm, "exponent": exponent,
            "ci_low": lo, "ci_high": hi, "seeds": 4}  # fmt: skip


def test_verdicts_follow_the_interval_against_the_bound():
    rows = [
        row("absorbing", "sft", 1.8, 1.7, 1.9),  # >= 1.6: holds
        row("absorbing", "dagger", 1.25, 1.1, 1.4),  # straddles 1.3: inconclusive
        row("absorbing", "gkd", 1.5, 1.4, 1.6),  # above 1.3: does not hold
        row("recoverable", "sft", 1.0, 0.9, 1.1),
    ]
    verdicts = [c["verdict"] for c in claims(rows, [])]
    assert verdicts == ["holds", "inconclusive", "does not hold", "holds"]
    assert "1.25 [1.10, 1.40]" in claims(rows, [])[1]["evidence"]


def test_paired_gaps_pair_arms_by_data_seed():
    bc = pd.DataFrame({8: [1.0, 2.0, 3.0], 64: [10.0, 12.0, 11.0]}, index=[0, 1, 2])
    dagger = pd.DataFrame({8: [0.5, 0.5, 0.5], 64: [2.0, 3.0, 2.5]}, index=[0, 1, 2])
    curves = {("absorbing", "causal_lm", "sft"): bc, ("absorbing", "causal_lm", "dagger"): dagger}
    (gap,) = paired_gaps(curves)
    assert (gap["minus"], gap["arm"], gap["L"], gap["seeds"]) == ("sft", "dagger", 64, 3)
    assert gap["gap"] == pytest.approx(8.5)  # (8 + 9 + 8.5) / 3
    assert gap["ci_low"] > 0
    (verdict,) = claims([], [gap])
    assert verdict["verdict"] == "holds" and "below sft" in verdict["claim"]


def test_the_shared_verdict_reads_an_interval_against_a_bound():
    from irlhf.studies.intervals import verdict

    assert verdict(0.1, 0.5) == "holds"
    assert verdict(-0.5, -0.1) == "does not hold"
    assert verdict(-0.1, 0.5) == "inconclusive"
    assert verdict(float("nan"), float("nan")) == "inconclusive"
    assert verdict(1.7, 1.9, bound=1.6) == "holds"
