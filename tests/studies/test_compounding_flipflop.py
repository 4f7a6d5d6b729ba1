"""The compounding study in the flip-flop world (`--world flipflop`): the tabular grid (one world,
data seeds only; the smoothing arms) and a small end-to-end run's summary keys."""

import dataclasses

import pytest

from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.studies import compounding, compounding_flipflop
from irlhf.studies.base import STUDIES, run_study, study_configs


def test_the_grid_has_one_world_per_preset_and_the_smoothing_arms():
    grid = study_configs(compounding.STUDY, "quick", "flipflop")
    tabular = [c for c in grid if c.policy.kind == "tabular" and c.world.seed == 0]
    assert all(isinstance(c.world, FlipFlopWorldSpec) for c in grid)
    assert {c.world.preset for c in grid} == {"absorbing", "recoverable"}
    assert {c.world.horizon for c in tabular} == {64}
    arms = {(c.algorithm, c.demonstrations.n, c.sft.smoothing) for c in tabular}
    assert {(a, k) for a, _, k in arms} == {
        ("sft", 0.01),
        ("sft", 0.1),
        ("sft", 1.0),
        ("dagger", 0.1),
    }
    assert len(arms) == 5  # BC, DAgger, BC at DAgger's budget, BC at two other smoothings
    assert {c.seed for c in tabular} == set(range(4))
    assert len(tabular) == 2 * 5 * 4
    # the world-seed arms: BC and DAgger in worlds 1..3 with data seed 0
    others = [c for c in grid if c.world.seed != 0]
    assert {
        (c.world.seed, c.seed, c.algorithm) for c in others if c.world.preset == "absorbing"
    } == {(w, 0, a) for w in (1, 2, 3) for a in ("sft", "dagger")}


def test_the_neural_arms_share_one_budget_and_one_student():
    grid = [c for c in compounding_flipflop.configs("default") if c.policy.kind == "causal_lm"]
    assert {c.world.seed for c in grid} == {0} and {c.world.horizon for c in grid} == {64}
    assert {c.policy for c in grid} == {compounding_flipflop.STUDENT}
    assert compounding_flipflop.STUDENT.act_epsilon == 0.02
    absorbing = {compounding_flipflop.arm_of(c) for c in grid if c.world.preset == "absorbing"}
    assert absorbing == {"sft", "dagger", "gkd", "sft_equal"}
    arms = compounding_flipflop.neural_arms("default")
    H, n = 64, 1024
    gkd_queries = arms["gkd"]["gkd"].expected_queries(n, H)
    dagger = arms["dagger"]["dagger"]
    assert dagger.beta0 == 0.0 and dagger.rounds == 2
    assert dagger.expected_queries(H) == pytest.approx(gkd_queries, rel=0.01)
    # every arm takes 300 optimiser steps; BC at the budget gets one sequence per H queries
    assert (dagger.rounds + 1) * dagger.fit.steps == arms["gkd"]["gkd"].steps == 300
    assert arms["sft"]["sft"].steps == 300
    assert arms["sft_equal"]["demonstrations"].n == n + -(-gkd_queries // H)


@pytest.mark.slow
def test_the_flipflop_summary_has_exponent_rows_and_the_smoothing_table(tmp_path, monkeypatch):
    def small(profile, world="automaton"):
        out = []
        for c in compounding_flipflop.configs("quick"):
            neural = c.policy.kind == "causal_lm"
            if c.seed < 2 and c.world.seed < 2 and (not neural or c.algorithm == "sft"):
                world_spec = c.world.model_copy(update={"horizon": 16})
                tiny = {"sft": c.sft.model_copy(update={"steps": 5})} if neural else {}
                out.append(c.model_copy(update={"world": world_spec, "mc_samples": 16, **tiny}))
        return out

    monkeypatch.setitem(
        STUDIES, "compounding", dataclasses.replace(compounding.STUDY, configs=small)
    )
    summary = run_study(
        "compounding", "quick", tmp_path, world="flipflop", executor="inline", progress=False
    )
    rows = {(r["world"], r["learner"], r["algorithm"]): r for r in summary["exponents"]}
    assert set(rows) == {
        (w, "tabular", a)
        for w in ("absorbing", "recoverable")
        for a in ("sft", "dagger", "sft_equal")
    } | {(w, "causal_lm", "sft") for w in ("absorbing", "recoverable")} | {
        ("absorbing", "causal_lm", "sft_equal")
    }
    for row in rows.values():
        assert row["seeds"] == 2  # data seeds only: world 1's runs are not in these rows
        assert {"exponent", "ci_low", "ci_high", "regret_at_max_L", "demo_tokens"} <= set(row)
    table = {(r["world"], r["smoothing"]) for r in summary["smoothing"]}
    assert table == {(w, k) for w in ("absorbing", "recoverable") for k in (0.01, 0.1, 1.0)}
    assert summary["world_seed"] == 0 and "irl_claim" not in summary
    spread = {(r["world"], r["algorithm"], r["seeds_vary"]): r for r in summary["world_seeds"]}
    assert spread[("absorbing", "sft", "world")]["seeds"] == 2  # worlds 0 and 1, data seed 0
    assert spread[("absorbing", "sft", "data")]["seeds"] == 2
    two_state = {(r["world"], r["algorithm"]): r for r in summary["neural_two_state"]}
    assert set(two_state) <= {
        ("absorbing", "sft"),
        ("absorbing", "sft_equal"),
        ("recoverable", "sft"),
    }
    assert all(
        0 <= r["entry_rate"] <= 1 and isinstance(r["predicts"], bool) for r in two_state.values()
    )
    claims = {c["claim"]: c["verdict"] for c in summary["claims"]}
    assert set(claims.values()) <= {"holds", "does not hold", "inconclusive"}
    assert any("neural BC compounds" in c for c in claims)


def test_two_state_rows_of_a_tiny_grid():
    grid = [
        c.model_copy(update={"world": c.world.model_copy(update={"horizon": 16})})
        for c in compounding_flipflop.configs("quick")
        if c.seed < 2
        and c.world.preset == "absorbing"
        and c.algorithm == "dagger"
        and c.policy.kind == "tabular"
        and c.world.seed == 0
    ]
    (row,) = compounding_flipflop.two_state_rows(grid)
    assert (row["world"], row["algorithm"], row["seeds"]) == ("absorbing", "dagger", 2)
    assert 0 < row["entry_rate"] < 1 and 0 < row["exit_rate"] < 1
    assert row["first_step_entry_rate"] > 0 and row["occupancy_gap"] >= 0
    assert isinstance(row["predicts"], bool) and row["note"] is None
    tabular = [c for c in compounding_flipflop.configs("quick") if c.policy.kind == "tabular"]
    assert {compounding_flipflop.arm_of(c) for c in tabular} == {
        "sft",
        "dagger",
        "sft_equal",
        "sft_smooth_0.01",
        "sft_smooth_1",
    }
