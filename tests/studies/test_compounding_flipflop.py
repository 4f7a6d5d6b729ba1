"""The compounding study in the flip-flop world (`--world flipflop`): the tabular grid (one world,
data seeds only; the smoothing arms) and a small end-to-end run's summary keys."""

import dataclasses

import pytest

from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.studies import compounding, compounding_flipflop
from irlhf.studies.base import STUDIES, run_study, study_configs


def test_the_grid_has_one_world_per_preset_and_the_smoothing_arms():
    grid = study_configs(compounding.STUDY, "quick", "flipflop")
    assert all(isinstance(c.world, FlipFlopWorldSpec) for c in grid)
    assert {c.world.seed for c in grid} == {compounding_flipflop.WORLD_SEED}
    assert {c.world.preset for c in grid} == {"absorbing", "recoverable"}
    assert {c.world.horizon for c in grid} == {64}
    arms = {(c.algorithm, c.demonstrations.n, c.sft.smoothing) for c in grid}
    assert {(a, k) for a, _, k in arms} == {
        ("sft", 0.01),
        ("sft", 0.1),
        ("sft", 1.0),
        ("dagger", 0.1),
    }
    assert len(arms) == 5  # BC, DAgger, BC at DAgger's budget, BC at two other smoothings
    assert {c.seed for c in grid} == set(range(4))
    assert len(grid) == 2 * 5 * 4
    assert len(compounding.configs("default", "flipflop")) == 2 * 5 * 8


@pytest.mark.slow
def test_the_flipflop_summary_has_exponent_rows_and_the_smoothing_table(tmp_path, monkeypatch):
    def small(profile, world="automaton"):
        out = []
        for c in compounding_flipflop.configs("quick"):
            if c.seed < 2:
                world_spec = c.world.model_copy(update={"horizon": 16})
                out.append(c.model_copy(update={"world": world_spec}))
        return out

    monkeypatch.setitem(
        STUDIES, "compounding", dataclasses.replace(compounding.STUDY, configs=small)
    )
    summary = run_study(
        "compounding", "quick", tmp_path, world="flipflop", executor="inline", progress=False
    )
    rows = {(r["world"], r["algorithm"]): r for r in summary["exponents"]}
    assert set(rows) == {
        (w, a) for w in ("absorbing", "recoverable") for a in ("sft", "dagger", "sft_equal")
    }
    for row in rows.values():
        assert row["learner"] == "tabular" and row["seeds"] == 2
        assert {"exponent", "ci_low", "ci_high", "regret_at_max_L", "demo_tokens"} <= set(row)
    table = {(r["world"], r["smoothing"]) for r in summary["smoothing"]}
    assert table == {(w, k) for w in ("absorbing", "recoverable") for k in (0.01, 0.1, 1.0)}
    assert summary["world_seed"] == 0 and "irl_claim" not in summary


def test_two_state_rows_of_a_tiny_grid():
    grid = [
        c.model_copy(update={"world": c.world.model_copy(update={"horizon": 16})})
        for c in compounding_flipflop.configs("quick")
        if c.seed < 2 and c.world.preset == "absorbing" and c.algorithm == "dagger"
    ]
    (row,) = compounding_flipflop.two_state_rows(grid)
    assert (row["world"], row["algorithm"], row["seeds"]) == ("absorbing", "dagger", 2)
    assert 0 < row["entry_rate"] < 1 and 0 < row["exit_rate"] < 1
    assert row["first_step_entry_rate"] > 0 and row["occupancy_gap"] >= 0
    assert isinstance(row["predicts"], bool) and row["note"] is None
    assert {compounding_flipflop.arm_of(c) for c in compounding_flipflop.configs("quick")} == {
        "sft",
        "dagger",
        "sft_equal",
        "sft_smooth_0.01",
        "sft_smooth_1",
    }
