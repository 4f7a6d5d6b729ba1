"""The RLHF studies end to end on small grids: outputs, keys, and claims with stated tests."""

import dataclasses
import json

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
