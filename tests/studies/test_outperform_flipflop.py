"""Study `outperform --world flipflop`: the grid's budgets and the summary end to end."""

import dataclasses
import json

import pytest

from irlhf.algorithms.dpo import DPOConfig
from irlhf.algorithms.ppo import PPOConfig
from irlhf.algorithms.reward_model import RewardModelConfig
from irlhf.algorithms.rlhf import RLHFConfig
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import DemoSpec, PolicySpec
from irlhf.kinds.rlhf import RLHFRunConfig
from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.studies import outperform, outperform_flipflop
from irlhf.studies.base import STUDIES, run_study, study_configs

ARMS = ("ppo", "dpo", "best_of_n", "sft_preferred", "sft_equal")


def tiny(seed: int, temperature: float) -> RLHFRunConfig:
    """A neural flip-flop run with every arm, small enough for a test (seconds)."""
    rl = {"iterations": 2, "prompts_per_iteration": 2, "samples_per_prompt": 2}
    return RLHFRunConfig(
        seed=seed,
        world=FlipFlopWorldSpec(preset="spread", horizon=6),
        demonstrations=DemoSpec(n=8, temperature=temperature),
        policy=PolicySpec(kind="causal_lm", arch="llama", n_layer=1, n_embd=16, n_head=2),
        sft=SFTConfig(steps=3, batch_size=4),
        rlhf=RLHFConfig(
            comparisons_per_round=6,
            reward_model=RewardModelConfig(kind="neural", steps=2, n_layer=1, n_embd=16),
        ),
        rloo=RLOOConfig(**rl),
        ppo=PPOConfig(**rl, epochs=1),
        dpo=DPOConfig(steps=2, batch_size=4),
        arms=ARMS,
        eval_samples=8,
        heldout_pairs=10,
    )


def test_the_default_grid_is_the_flipflop_world_with_equal_budgets_where_claimed():
    grid = study_configs(outperform.STUDY, "default", "flipflop")
    assert {c.world.kind for c in grid} == {"flipflop"}
    assert {c.world.seed for c in grid} == {outperform_flipflop.WORLD_SEED}
    assert {c.policy.kind for c in grid} == {"causal_lm"} and {c.policy.arch for c in grid} == {
        "llama"
    }
    cells = {(c.demonstrations.temperature, c.rlhf.comparisons_per_round) for c in grid}
    seeds = outperform_flipflop.PROFILES["default"][0]
    assert len(grid) == len(cells) * seeds
    largest = max(n for _, n in cells)
    for c in grid:
        # PPO and RLOO: the same roll-outs (iterations x prompts x samples) and KL penalty
        for knob in ("iterations", "prompts_per_iteration", "samples_per_prompt", "kl_coef"):
            assert getattr(c.ppo, knob) == getattr(c.rloo, knob)
        if c.rlhf.comparisons_per_round == largest and c.demonstrations.temperature in (0.1, 2.0):
            assert set(outperform_flipflop.FULL_ARMS) <= set(c.arms)
    # the budget axis at the noisiest demonstrator, the temperature axis at the largest budget
    assert {n for t, n in cells if t == 2.0} == {128, largest}
    # the two ends only (make reproduce's time; the full profile has 2, 1, 0.5 and 0.1)
    assert {t for t, n in cells if n == largest} == {0.1, 2.0}


def test_the_quick_grid_is_small():
    assert len(study_configs(outperform.STUDY, "quick", "flipflop")) <= 4


@pytest.mark.slow
def test_the_summary_states_every_arms_gain_interval_and_budget(tmp_path, monkeypatch):
    configs = [tiny(seed, temperature) for temperature in (2.0, 0.1) for seed in range(2)]
    patched = dataclasses.replace(outperform.STUDY, configs=lambda profile: configs)
    monkeypatch.setitem(STUDIES, "outperform", patched)
    summary = run_study("outperform", "quick", tmp_path, executor="inline", progress=False)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["world"] == "flipflop"
    rows = {(r["demo_temperature"], r["method"]): r for r in summary["rows"]}
    assert set(rows) == {(t, m) for t in (0.1, 2.0) for m in ("rloo", *ARMS)}
    for row in rows.values():
        assert row["seeds"] == 2
        assert row["gain_ci_low"] <= row["gain"] <= row["gain_ci_high"]
        assert {"demo_tokens", "annotator_comparisons", "optimizer_steps"} <= set(row)
    assert rows[2.0, "dpo"]["annotator_comparisons"] == rows[2.0, "rloo"]["annotator_comparisons"]
    assert rows[2.0, "sft_equal"]["optimizer_steps"] == rows[2.0, "rloo"]["optimizer_steps"]
    claim = summary["claim"]
    assert claim["noisiest_temperature"] == 2.0 and claim["near_greedy_temperature"] == 0.1
    assert claim["gain_noisy_ci"] == [rows[2.0, "rloo"]["gain_ci_low"],
                                      rows[2.0, "rloo"]["gain_ci_high"]]  # fmt: skip
    assert (tmp_path / "outperform_flipflop_gain.png").stat().st_size > 10_000
