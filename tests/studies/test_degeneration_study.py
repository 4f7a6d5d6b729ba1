"""The degeneration study end to end on a tiny corpus written by the test: a tiny teacher, every
method (SFT, GKD, RLHF, real-text control, the teacher itself), the summary's documented rows,
intervals over two seeds, and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from irlhf.algorithms.reward_model import RewardModelConfig
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.experiments import run_one
from irlhf.experiments.results import results_table
from irlhf.kinds.degeneration import EvalSpec, RLHFSpec, StudentSpec
from irlhf.studies.degeneration import NAMES, configs, grid, summarize
from irlhf.worlds.text import TeacherSpec, TextSpec

LINES = [
    "Now is the winter of our discontent",
    "Made glorious summer by this sun of York;",
    "And all the clouds that lour'd upon our house",
    "In the deep bosom of the ocean buried.",
    "Shall I compare thee to a summer's day?",
    "Thou art more lovely and more temperate:",
]


def write_corpus(root: Path, n_docs: int = 3, n_lines: int = 120) -> Path:
    """A few documents of shuffled verse lines with speaker names, like the plays."""
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for d in range(n_docs):
        rows = []
        for i in range(n_lines):
            rows += [f"{['KING', 'QUEEN', 'FOOL'][(i + d) % 3]}.", LINES[(i * (d + 2)) % 6], ""]
        (corpus / f"play_{d}.txt").write_text("\n".join(rows))
    return corpus


def tiny_world(root: Path) -> TextSpec:
    teacher = TeacherSpec(vocab_size=300, n_layer=1, n_embd=32, context=48, steps=40, warmup=5)
    return TextSpec(corpus=str(write_corpus(root)), teacher=teacher, prompt_length=8, horizon=40)


@pytest.mark.slow
def test_degeneration_study_runs_end_to_end_on_a_tiny_corpus(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IRLHF_DATA", str(tmp_path / "data"))
    rlhf = RLHFSpec(
        comparisons=16,
        reward_model=RewardModelConfig(kind="neural", steps=5, batch_size=8),
        rloo=RLOOConfig(iterations=2, prompts_per_iteration=4, samples_per_prompt=2),
    )
    evaluation = EvalSpec(n_prompts=6, mc_samples=4, n_sentences=3, max_repeats=4)
    student = StudentSpec(n_layer=1, n_embd=16, n_head=2)
    world = tiny_world(tmp_path)
    grid_configs = grid(2, world, student, 16, 8, rlhf, evaluation, 4)
    # no separate SFT run: each seed's rlhf run evaluates its SFT start
    assert {c.method for c in grid_configs} == set(NAMES) - {"sft"}
    results = [run_one(c, tmp_path / "runs") for c in grid_configs]
    assert [r.error for r in results if r.status != "done"] == []
    # ... and its SFT start's records are those of a standalone sft run of the same seed
    (alone,) = grid(2, world, student, 16, 8, rlhf, evaluation, 4, ("sft",))[:1]
    standalone = run_one(alone, tmp_path / "runs")
    (rlhf_run,) = [
        r for c, r in zip(grid_configs, results, strict=True)
        if c.method == "rlhf" and c.seed == alone.seed
    ]  # fmt: skip

    def numbers(records, keep):
        return sorted(
            (r["metric"], r.get("decoding"), r.get("L"), r.get("n_repeats"), r["value"])
            for r in records
            if keep(r) and r["metric"] != "train_seconds"
        )  # fmt: skip

    start = numbers(rlhf_run.records, lambda r: r.get("stage") == "sft")
    assert len(start) > 20 and start == numbers(standalone.records, lambda r: True)
    out = tmp_path / "out"
    out.mkdir()
    summary = summarize(results_table(zip(grid_configs, results, strict=True)), out)
    json.dumps(summary)
    models = {(r["name"], r["decoding"]): r for r in summary["models"]}
    assert set(models) == {(n, d) for n in NAMES.values() for d in ("greedy", "sample")}
    keys = {"rep_4", "seq_rep_4", "distinct_4", "loop_rate", "pct_ex_acc_err_at_max_len"}
    for row in models.values():
        assert keys <= set(row)
        assert 0.0 <= row["loop_rate"] <= 1.0 and 0.0 <= row["distinct_4"] <= 1.0
    sft = models[("SFT", "greedy")]
    assert sft["seeds"] == 2 and sft["seq_rep_4_ci_low"] <= sft["seq_rep_4"]
    assert models[("teacher", "greedy")]["pct_ex_acc_err_at_max_len"] is None
    assert sft["pct_ex_acc_err_at_max_len"] is not None
    reinforcement = summary["self_reinforcement"]
    assert {r["n_repeats"] for r in reinforcement} == {1, 2, 3, 4}
    assert all(0 <= r["tp"] <= 1 and {"ip", "wr"} <= set(r) for r in reinforcement)
    assert summary["teacher"]["teacher/held_out_bits_per_char"] > 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "degeneration_exacc.png",
        "degeneration_repetition.png",
        "degeneration_self_reinforcement.png",
    ]
    # a rerun reads the finished runs back
    assert all(run_one(c, tmp_path / "runs").skipped for c in grid_configs)


def test_profiles_validate_and_share_one_teacher() -> None:
    for profile in ("quick", "default"):
        grid_configs = configs(profile)
        assert {c.method for c in grid_configs} == set(NAMES) - {"sft"}  # rlhf evaluates SFT
        assert len({c.world.teacher for c in grid_configs}) == 1
        for c in grid_configs:
            assert c.world.prompt_length + c.world.horizon <= c.world.teacher.context


def test_intervals_of_fractions_stay_in_the_unit_interval():
    from irlhf.studies.degeneration import _interval

    values = np.array([0.0, 0.0, 0.75])  # mean 0.25, t half-width 0.90 on 2 degrees of freedom
    mean, low, high = _interval(values, "loop_rate")
    assert mean == 0.25 and low == 0.0 and high == 1.0
    _, low, high = _interval(values, "gold_return")  # not a fraction: unclipped
    assert low < 0.0 and high > 1.0


def test_claims_are_paired_over_seeds_with_verdicts_known_by_construction():
    """SFT loops greedily on every seed and almost never when sampling (holds); GKD loops exactly
    as much as SFT on two seeds and less on one (a paired difference of 0, 0, 0.3: the interval
    straddles 0, inconclusive); RLHF loops more than SFT on every seed by 0.2 +- 0.01 (does not
    hold); TP rises from n = 1 to n = 4 by 0.09 to 0.11 on every seed (holds)."""
    rows = []
    loops = {
        ("sft", "greedy"): [0.9, 1.0, 0.95],
        ("sft", "sample"): [0.0, 0.05, 0.0],
        ("gkd", "greedy"): [0.9, 1.0, 0.65],
        ("rlhf", "greedy"): [1.1, 1.21, 1.14],
    }
    for (method, decoding), values in loops.items():
        for seed, v in enumerate(values):
            rows.append({"method": method, "seed": seed, "metric": "loop_rate",
                         "decoding": decoding, "value": v})  # fmt: skip
    for seed, (tp1, tp4) in enumerate([(0.2, 0.3), (0.25, 0.36), (0.3, 0.39)]):
        for n, v in ((1, tp1), (4, tp4)):
            rows.append({"method": "sft", "seed": seed, "metric": "tp", "n_repeats": n,
                         "value": v})  # fmt: skip
    from irlhf.studies.degeneration import _claims

    got = {c["claim"]: c["verdict"] for c in _claims(pd.DataFrame(rows))}
    assert got == {
        "SFT's greedy continuations loop more often than its sampled ones": "holds",
        "on-policy (GKD) loops less than SFT (greedy)": "inconclusive",
        "RLHF (RLOO) loops less than SFT (greedy)": "does not hold",
        "repetition reinforces itself in SFT: TP after 4 repeats above TP after 1": "holds",
    }
