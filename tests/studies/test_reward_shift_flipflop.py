"""Study `reward_shift --world flipflop`: the grid (neural rounds, world, budgets) and a tiny
end-to-end run whose summary has the documented keys and claims with valid verdicts."""

import dataclasses
import json

import pytest

from irlhf.algorithms.reward_model import RewardModelConfig
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import PolicySpec
from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.studies import reward_shift, reward_shift_flipflop
from irlhf.studies.base import STUDIES, run_study, study_configs

VERDICTS = {"holds", "does not hold", "inconclusive"}


@pytest.mark.parametrize("profile", ["quick", "default", "full"])
def test_one_iterated_neural_rlhf_run_per_data_seed_in_the_spread_world(profile):
    assert reward_shift.STUDY.worlds == ("automaton", "flipflop")
    assert reward_shift.STUDY.reproduce_worlds == ("automaton", "flipflop")
    grid = study_configs(reward_shift.STUDY, profile, "flipflop")
    seeds, rounds, steps, iterations, samples, rm_steps = reward_shift_flipflop.PROFILES[profile]
    assert sorted(c.seed for c in grid) == list(range(seeds))
    for c in grid:
        assert c.world == reward_shift_flipflop.WORLD and c.world.preset == "spread"
        assert c.policy == reward_shift_flipflop.STUDENT and c.rl == "rloo"
        assert c.rlhf.rounds == rounds and c.rlhf.anchor == "previous"
        assert c.rlhf.reward_model.kind == "neural" and c.rlhf.reward_model.steps == rm_steps
        assert c.sft.steps == steps and c.rloo.iterations == iterations
        assert c.return_samples == c.eval_samples == samples
        assert c.demonstrations.temperature == reward_shift_flipflop.TEMPERATURE


def tiny(config):
    """A grid config shrunk to seconds: horizon 16, a 1 x 16 student, a few steps."""
    reward_model = RewardModelConfig(kind="neural", steps=2, n_layer=1, n_embd=16)
    return config.model_copy(
        update={
            "world": FlipFlopWorldSpec(preset="spread", horizon=16, seed=0),
            "policy": PolicySpec(kind="causal_lm", arch="llama", n_layer=1, n_embd=16, n_head=2),
            "demonstrations": config.demonstrations.model_copy(update={"n": 8}),
            "sft": SFTConfig(steps=3, batch_size=4),
            "rlhf": config.rlhf.model_copy(
                update={"rounds": 3, "comparisons_per_round": 6, "reward_model": reward_model}
            ),
            "rloo": RLOOConfig(iterations=2, prompts_per_iteration=2, samples_per_prompt=2),
            "eval_samples": 8,
            "return_samples": 8,
            "heldout_pairs": 10,
        }
    )


@pytest.mark.slow
def test_a_tiny_run_has_the_documented_keys_and_valid_verdicts(tmp_path, monkeypatch):
    configs = [tiny(c) for c in reward_shift.configs("quick", "flipflop")]
    patched = dataclasses.replace(reward_shift.STUDY, configs=lambda profile, world: configs)
    monkeypatch.setitem(STUDIES, "reward_shift", patched)
    summary = run_study(
        "reward_shift", "quick", tmp_path, executor="inline", progress=False, world="flipflop"
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["world"] == "flipflop" and set(reward_shift_flipflop.KEYS) <= set(summary)
    names = [m["name"] for m in summary["models"]]
    assert names == ["base", "sft", "rlhf_1", "rlhf_2", "rlhf_3"]
    for m in summary["models"]:
        assert m["seeds"] == 2 and m["samples"] == 16
        assert m["j_ci_low"] <= m["j_mean"] <= m["j_ci_high"]
        assert m["p10"] <= m["p50"] <= m["p90"]
    assert {(s["model"], s["minus"]) for s in summary["shifts"]} == {
        ("rlhf_1", "sft"),
        ("rlhf_2", "sft"),
        ("rlhf_2", "rlhf_1"),
        ("rlhf_3", "sft"),
        ("rlhf_3", "rlhf_2"),
    }
    assert set(summary["references"]) == {"demonstrator", "expert", "optimal"}
    assert len(summary["claims"]) == 4
    assert all(c["verdict"] in VERDICTS and c["evidence"] for c in summary["claims"])
    assert (tmp_path / "reward_shift_flipflop.png").stat().st_size > 10_000
