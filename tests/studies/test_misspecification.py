"""The misspecification study: three levels per knob for BC, DAgger and GKD, and its rows."""

import dataclasses

import pytest

from irlhf.studies import misspecification
from irlhf.studies.base import STUDIES, run_study


def test_every_knob_has_three_levels_for_every_algorithm():
    grid = misspecification.configs("default")
    full = misspecification.student("window", None)
    assert full == misspecification.flipflop.STUDENT
    students = {c.policy for c in grid}
    assert students == {full} | {
        misspecification.student(k, v) for k, (_, levels) in misspecification.KNOBS.items()
        for v in levels[1:]
    }  # fmt: skip
    assert len(students) == 7  # the full student shared by the three knobs, two levels each
    for policy in students:
        runs = [c for c in grid if c.policy == policy]
        assert {c.algorithm for c in runs} == {"sft", "dagger", "gkd"}
        assert {c.seed for c in runs} == set(range(misspecification.SEEDS["default"]))
        assert {c.world.preset for c in runs} == {"absorbing"}
    assert misspecification.student("window", 1).window == 1
    assert misspecification.student("depth", 0).n_layer == 0


@pytest.mark.slow
def test_the_summary_has_a_row_per_knob_level_and_algorithm(tmp_path, monkeypatch):
    def tiny(profile):
        out = []
        for c in misspecification.configs("quick"):
            world = c.world.model_copy(update={"horizon": 16})
            fits = {k: getattr(c, k).model_copy(update={"steps": 3}) for k in ("sft", "gkd")}
            dagger = c.dagger.model_copy(update={"rollouts_per_round": 4, "fit": fits["sft"]})
            out.append(c.model_copy(update={"world": world, "mc_samples": 16, "dagger": dagger,
                                             **fits}))  # fmt: skip
        return out

    study = dataclasses.replace(misspecification.STUDY, configs=tiny)
    monkeypatch.setitem(STUDIES, "misspecification", study)
    summary = run_study("misspecification", "quick", tmp_path, executor="inline", progress=False)
    keys = {(r["knob"], r["value"], r["algorithm"]) for r in summary["rows"]}
    assert keys == {
        (k, v, a) for k, (_, levels) in misspecification.KNOBS.items() for v in levels
        for a in ("sft", "dagger", "gkd")
    }  # fmt: skip
    for row in summary["rows"]:
        assert {"exponent", "ci_low", "ci_high", "regret_at_max_L", "eps"} <= set(row)
        assert row["seeds"] == 1 and row["eps"] >= 0
    assert (tmp_path / "misspecification.png").is_file()
    # one claim per interactive arm and level, the full student once: (1 + 6) x 2
    assert len(summary["claims"]) == 14
    assert {c["verdict"] for c in summary["claims"]} == {"inconclusive"}  # one seed: no interval
