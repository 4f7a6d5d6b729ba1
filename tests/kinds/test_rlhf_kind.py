"""The `rlhf` kind with a causal LM in an automaton world and the extra preference arms."""

import pytest
import torch
from pydantic import ValidationError

from irlhf.algorithms.dpo import DPOConfig
from irlhf.algorithms.ppo import PPOConfig
from irlhf.algorithms.reward_model import RewardModelConfig
from irlhf.algorithms.rlhf import RLHFConfig
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import DemoSpec, PolicySpec
from irlhf.kinds.rlhf import RLHFRunConfig, policy_steps, run
from irlhf.kinds.world_spec import FlipFlopWorldSpec

ARMS = ("ppo", "dpo", "best_of_n", "sft_preferred", "sft_equal")
NEURAL = PolicySpec(kind="causal_lm", arch="llama", n_layer=1, n_embd=16, n_head=2)


class _Log:
    def log(self, record: dict) -> None:
        pass


def tiny(**changes) -> RLHFRunConfig:
    """A neural flip-flop run small enough for a unit test (a few seconds)."""
    rl = {"iterations": 2, "prompts_per_iteration": 2, "samples_per_prompt": 2}
    fields = {
        "world": FlipFlopWorldSpec(preset="spread", horizon=6),
        "demonstrations": DemoSpec(n=8, temperature=2.0),
        "policy": NEURAL,
        "sft": SFTConfig(steps=3, batch_size=4),
        "rlhf": RLHFConfig(
            comparisons_per_round=6,
            reward_model=RewardModelConfig(kind="neural", steps=2, n_layer=1, n_embd=16),
        ),
        "rloo": RLOOConfig(**rl),
        "ppo": PPOConfig(**rl, epochs=1),
        "dpo": DPOConfig(steps=2, batch_size=4),
        "arms": ARMS,
        "eval_samples": 8,
        "heldout_pairs": 10,
    }
    return RLHFRunConfig(**{**fields, **changes})


def test_a_causal_lm_runs_every_arm_in_the_flipflop_world_and_records_equal_budgets():
    torch.manual_seed(0)
    config = tiny()
    records = run(config, _Log())
    j = {r["model"]: r["value"] for r in records if r["metric"] == "j"}
    assert set(j) == {"base", "sft", "rlhf_1", *ARMS}
    assert all(torch.isfinite(torch.tensor(v)) for v in j.values())
    se = {r["model"] for r in records if r["metric"] == "j_se"}
    assert se == {"sft", "rlhf_1", *ARMS}  # every neural model is a Monte-Carlo mean
    spent = {(r["model"], r["metric"]): r["value"] for r in records if "model" in r}
    n, horizon, demos = 6, 6, 8
    sft_steps, rl_steps = 3, policy_steps(config.rloo)
    assert rl_steps == 2 and policy_steps(config.ppo) == 2  # one step per epoch
    for arm in ("rlhf_1", "ppo", "dpo", "best_of_n", "sft_preferred"):
        assert spent[arm, "annotator_comparisons"] == n  # the RLHF arm's comparisons
        assert spent[arm, "demo_tokens"] == demos * horizon
    assert spent["sft", "annotator_comparisons"] == spent["sft_equal", "annotator_comparisons"] == 0
    # sft_equal: two more demonstrations per comparison, the RLOO arm's optimiser steps
    assert spent["sft_equal", "demo_tokens"] == (demos + 2 * n) * horizon
    assert spent["sft_equal", "optimizer_steps"] == spent["rlhf_1", "optimizer_steps"]
    assert spent["rlhf_1", "optimizer_steps"] == sft_steps + rl_steps
    assert spent["dpo", "optimizer_steps"] == sft_steps + 2
    # the RLHF arm's own annotator counted only its round; the arms' comparisons are their own
    assert next(r["value"] for r in records if r["metric"] == "comparisons") == n


def test_arms_do_not_change_the_rlhf_arm():
    """The arms draw from their own generator: rlhf_1's J is that of the same run without
    arms (the evaluation draws of SFT and RLHF come before any arm is scored)."""
    with_arms = run(tiny(arms=("dpo",)), _Log())
    without = run(tiny(arms=()), _Log())

    def j(records, model):
        return next(r["value"] for r in records if r["metric"] == "j" and r["model"] == model)

    assert j(with_arms, "rlhf_1") == j(without, "rlhf_1")
    assert j(with_arms, "sft") == j(without, "sft")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"policy": PolicySpec(), "rlhf": RLHFConfig()}, 'arms need policy.kind = "causal_lm"'),
        ({"rlhf": RLHFConfig(rounds=2)}, "rlhf.rounds = 1"),
        ({"arms": ("rloo", "dpo")}, 'arms: "rloo" is the run\'s own rl'),
    ],
)
def test_the_kind_refuses_arms_it_cannot_run_with_a_one_line_error(changes, message):
    with pytest.raises(ValidationError, match=message) as error:
        tiny(**changes)
    assert "\n" not in str(error.value.errors()[0]["msg"])
