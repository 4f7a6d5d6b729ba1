"""The RLHF studies end to end on small grids: outputs, keys, and claims with stated tests."""

import dataclasses
import json

import pandas as pd
import pytest

from irlhf.algorithms.rlhf import RLHFConfig
from irlhf.kinds.common import DemoSpec
from irlhf.kinds.rlhf import RLHFRunConfig
from irlhf.studies import outperform, overoptimization, reward_shift
from irlhf.studies.base import STUDIES, run_study
from irlhf.worlds import AutomatonSpec


def _run(monkeypatch, tmp_path, study, configs):
    patched = dataclasses.replace(study, configs=lambda profile: configs)
    monkeypatch.setitem(STUDIES, study.name, patched)
    summary = run_study(study.name, "quick", tmp_path, executor="inline", progress=False)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "results.parquet").exists()
    return summary


@pytest.mark.slow
def test_outperform_gain_is_positive_for_a_hot_demonstrator_and_small_for_a_greedy_one(
    tmp_path, monkeypatch
):
    configs = [
        RLHFRunConfig(
            seed=seed,
            world=AutomatonSpec(preset="spread", seed=seed),
            demonstrations=DemoSpec(n=100, temperature=temperature),
            rlhf=RLHFConfig(comparisons_per_round=1000),
        )
        for temperature in (0.1, 2.0)
        for seed in range(4)
    ]
    summary = _run(monkeypatch, tmp_path, outperform.STUDY, configs)
    rows = {r["demo_temperature"]: r for r in summary["grid"]}
    keys = {
        "demo_temperature",
        "demo_epsilon",
        "comparisons",
        "label_noise",
        "rm_accuracy",
        "j_sft",
        "j_rlhf",
        "j_demonstrator",
        "j_expert",
        "j_optimal",
        "gain",
        "gain_ci_low",
        "gain_ci_high",
    }
    assert keys <= set(rows[2.0])
    assert (tmp_path / "outperform_gain.png").stat().st_size > 10_000
    # 95% t-interval over 4 seeds excludes 0 for the hot demonstrator ...
    assert rows[2.0]["gain_ci_low"] > 0
    # ... and the gain shrinks as the demonstrations approach the optimum.
    assert rows[0.1]["gain"] < rows[2.0]["gain"]
    for row in rows.values():
        assert row["j_optimal"] >= max(row["j_rlhf"], row["j_sft"], row["j_demonstrator"]) - 1e-9


@pytest.mark.slow
def test_reward_shift_reports_each_model_and_rising_means(tmp_path, monkeypatch):
    configs = [c.model_copy(update={"return_samples": 300}) for c in reward_shift.configs("quick")]
    summary = _run(monkeypatch, tmp_path, reward_shift.STUDY, configs)
    names = [m["name"] for m in summary["models"]]
    assert names == ["base", "sft", "rlhf_1", "rlhf_2", "rlhf_3", "rlhf_4"]
    for m in summary["models"]:
        assert m["p10"] <= m["p50"] <= m["p90"]
    exact = {r["name"]: r["j_mean"] for r in summary["exact"]}
    assert exact["rlhf_1"] > exact["sft"] > exact["base"]
    assert 0 <= summary["means_rise"]["fraction_of_increases"] <= 1


@pytest.mark.slow
def test_overoptimization_fits_both_forms(tmp_path, monkeypatch):
    configs = [
        c.model_copy(update={"bon_samples": 100, "best_of_n": [1, 2, 4, 8, 16]})
        for c in overoptimization.configs("quick")
    ]
    summary = _run(monkeypatch, tmp_path, overoptimization.STUDY, configs)
    assert {f["method"] for f in summary["fits"]} == {"best_of_n", "rl"}
    for fit in summary["fits"]:
        assert set(fit) >= {"a", "b", "r2", "form"}
    rl = sorted((r for r in summary["path"] if r["method"] == "rl"), key=lambda r: r["sqrt_kl"])
    # The proxy keeps rising with KL; the gold reward does not keep up (over-optimisation).
    assert rl[-1]["proxy"] > rl[0]["proxy"]
    assert rl[-1]["proxy"] - rl[-1]["gold"] > rl[0]["proxy"] - rl[0]["gold"]
    assert len(summary["claims"]) == 4
    assert {c["verdict"] for c in summary["claims"]} <= {"holds", "does not hold", "inconclusive"}


def _overoptimization_path(seeds: range) -> pd.DataFrame:
    """Hand-built `path` records, seed s: RL gold 1 -> 5 -> -1 - s and proxy 1 -> 6 -> 7 + s at
    kl_coef 1, 0.1, 0.01 (KL 0.5, 4, 16); best-of-n gold 0 -> 3, proxy 0 -> s - 2 at n = 1, 4."""
    rows = []
    for s in seeds:
        rows += [
            ("rl", 1.0, 0.5, 1.0, 1.0, s),
            ("rl", 0.1, 4.0, 5.0, 6.0, s),
            ("rl", 0.01, 16.0, -1.0 - s, 7.0 + s, s),
            ("best_of_n", 1.0, 0.0, 0.0, 0.0, s),
            ("best_of_n", 4.0, 0.636, 3.0, s - 2.0, s),
        ]
    df = pd.DataFrame(rows, columns=["method", "param", "kl", "gold", "proxy", "seed"])
    return df.assign(status="done", metric="path", run_id=df["seed"].astype(str))


def test_overoptimization_claims_on_a_hand_built_path(tmp_path):
    # Per seed (0, 1, 2), by construction: RL gold falls from its peak (kl_coef 0.1) by 6, 7, 8;
    # the RL proxy rises past it by 1, 2, 3; proxy - gold at the largest KL is 8, 10, 12 for RL
    # and -5, -4, -3 for best-of-n. 95% t-intervals, t_{0.975, 2} = 4.303: mean +- 4.303 sd/sqrt 3.
    summary = overoptimization.summarize(_overoptimization_path(range(3)), tmp_path)
    got = {c["claim"].split(" (")[0]: (c["verdict"], c["evidence"]) for c in summary["claims"]}
    assert got == {
        "best-of-n: the proxy reward exceeds the gold reward at the largest KL": (
            "does not hold",
            "proxy - gold -4.00 [-6.48, -1.52], 3 seeds",
        ),
        "RL: the proxy reward keeps rising past the gold peak": (
            "inconclusive",
            "proxy(largest KL) - proxy(gold peak) 2.00 [-0.48, 4.48], 3 seeds",
        ),
        "RL: the gold reward peaks and falls": (
            "holds",
            "gold(gold peak) - gold(largest KL) 7.00 [4.52, 9.48], 3 seeds",
        ),
        "RL: the proxy reward exceeds the gold reward at the largest KL": (
            "holds",
            "proxy - gold 10.00 [5.03, 14.97], 3 seeds",
        ),
    }
    span = "kl_coef = 0.1, sqrt(KL) = 2.00 -> kl_coef = 0.01, sqrt(KL) = 4.00"
    assert span in summary["claims"][2]["claim"]


def test_overoptimization_claims_with_one_seed_are_inconclusive(tmp_path):
    summary = overoptimization.summarize(_overoptimization_path(range(1)), tmp_path)
    assert len(summary["claims"]) == 4
    for claim in summary["claims"]:
        assert claim["verdict"] == "inconclusive"
        assert "on 1 seed(s): no interval" in claim["evidence"]
