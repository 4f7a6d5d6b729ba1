"""The recovery study end to end on a small grid: BC recovers slowly where traps absorb and at
once where every token exits; DAgger, which has seen its own trap states, recovers fast."""

from __future__ import annotations

import dataclasses
import math

import pytest

from irlhf.kinds.recovery import ProbeSpec, RecoveryConfig
from irlhf.studies import recovery
from irlhf.studies.base import STUDIES, run_study


@pytest.mark.slow
def test_recovery_study_reads_absorbing_as_slow_and_recoverable_as_fast(tmp_path, monkeypatch):
    def small(profile: str, world: str = "flipflop") -> list[RecoveryConfig]:
        probe = ProbeSpec(n_prefixes=300, n_boot=100, horizon_after=32)
        return [c.model_copy(update={"probe": probe}) for c in recovery.configs("quick", world)]

    monkeypatch.setitem(STUDIES, "recovery", dataclasses.replace(recovery.STUDY, configs=small))
    summary = run_study("recovery", "quick", tmp_path, executor="inline", progress=False)
    rows = {(r["preset"], r["algorithm"]): r for r in summary["rows"]}
    assert set(rows) == {(p, a) for p in recovery.PRESETS for a in recovery.LEARNERS}
    for r in rows.values():
        assert not math.isnan(r["half_life"]) and r["seeds"] == 2
    # one perturbed token costs the trap's 2 per step at d = 1 in both worlds ...
    assert rows[("absorbing", "sft")]["excess_regret_at_1"] > 1.5
    # ... and BC carries it far longer where traps absorb (hand rule: an uninformed table
    # leaves a 16-token flip-flop trap in ~16 steps; an exit-everywhere trap in 2-3)
    assert rows[("absorbing", "sft")]["half_life"] > 3 * rows[("recoverable", "sft")]["half_life"]
    assert rows[("recoverable", "sft")]["half_life"] <= 3
    assert rows[("absorbing", "dagger")]["half_life"] < rows[("absorbing", "sft")]["half_life"]
    assert (tmp_path / "recovery_curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_recovery_study_in_the_oracle_world_rows_notes_and_figure(tmp_path, monkeypatch):
    # a small grid: 100 prefixes, 32 demonstrations, 20 SFT and 10 GKD steps
    monkeypatch.setitem(recovery.LM_PROFILES["oracle"], "quick", (100, 32, 20, 10))
    summary = run_study(
        "recovery", "quick", tmp_path, executor="inline", progress=False, world="oracle"
    )
    rows = {(r["algorithm"], r["measure"]): r for r in summary["rows"]}
    for r in summary["rows"]:
        assert {"world", "preset", "learner", "half_life", "ci_low", "ci_high"} <= set(r)
        assert r["world"] == "oracle" and r["preset"] == "default"
        assert r["ci_low"] <= r["half_life"] <= r["ci_high"] and r["half_life"] >= 2
    # the expert continuing its own perturbed prefix is still the expert: no excess KL, so no
    # KL half-life (a note instead), but the perturbation's trace in it has one
    assert ("expert", "kl") not in rows and rows[("expert", "trace")]["learner"] == "expert"
    assert any(n["algorithm"] == "expert" and "excess KL" in n["note"] for n in summary["notes"])
    assert {("sft", "trace"), ("gkd", "trace")} <= set(rows)
    assert rows[("sft", "trace")]["learner"] == "causal_lm"
    assert (tmp_path / "recovery_curves_oracle.png").stat().st_size > 10_000


def test_lm_claims_read_the_half_life_interval_against_the_probe_length():
    """D = 32: an interval below it holds, one reaching past it is inconclusive, one at or past
    it (never recovered within D) does not hold; the expert's and trace rows give no claim."""
    D = recovery.LM_PROBE.horizon_after
    assert D == 32
    rows = [
        {"learner": "causal_lm", "algorithm": "sft", "measure": "kl", "seed": 0,
         "half_life": 3.0, "ci_low": 2.0, "ci_high": 5.0},
        {"learner": "causal_lm", "algorithm": "gkd", "measure": "kl", "seed": 0,
         "half_life": 20.0, "ci_low": 9.0, "ci_high": 40.0},
        {"learner": "causal_lm", "algorithm": "gkd", "measure": "kl", "seed": 1,
         "half_life": 33.0, "ci_low": 33.0, "ci_high": 36.0},
        {"learner": "causal_lm", "algorithm": "sft", "measure": "trace", "seed": 0,
         "half_life": 2.0, "ci_low": 2.0, "ci_high": 2.0},
        {"learner": "expert", "algorithm": "expert", "measure": "trace", "seed": 0,
         "half_life": 2.0, "ci_low": 2.0, "ci_high": 2.0},
    ]  # fmt: skip
    got = [c["verdict"] for c in recovery._lm_claims(rows)]
    assert got == ["holds", "inconclusive", "does not hold"]
