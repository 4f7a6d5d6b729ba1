"""The `recovery` experiment kind: the expert as its own continuer (no training, excess KL 0 at
every d, its KL half-life a note record, not a value), and the records a learner's run writes."""

import math

import pytest

from irlhf.experiments.run import run_one
from irlhf.kinds.common import DemoSpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.recovery import ProbeSpec, RecoveryConfig
from irlhf.worlds import AutomatonSpec

PROBE = ProbeSpec(position=2, horizon_after=4, n_prefixes=300, n_boot=50)
LEARNER = ImitationConfig(
    world=AutomatonSpec(preset="tiny", horizon=8), demonstrations=DemoSpec(n=20)
)


def records(config: RecoveryConfig, tmp_path) -> list[dict]:
    result = run_one(config, tmp_path)
    assert result.status == "done", result.error
    for r in result.records:
        assert not (isinstance(r["value"], float) and math.isnan(r["value"]))
    return result.records


def test_the_expert_as_continuer_has_zero_excess_kl_and_no_kl_half_life(tmp_path):
    recs = records(RecoveryConfig(learner=LEARNER, probe=PROBE, continuer="expert"), tmp_path)
    excess_kl = [r for r in recs if r["metric"] == "excess_kl"]
    assert [r["d"] for r in excess_kl] == [1, 2, 3, 4]
    assert all(r["value"] == pytest.approx(0.0, abs=1e-12) for r in excess_kl)
    metrics = {r["metric"] for r in recs}
    assert "half_life_kl" not in metrics and "demo_tokens" not in metrics  # nothing trained
    notes = [r["note"] for r in recs if r["metric"] == "recovery_note"]
    assert any("excess KL at d = 1" in n for n in notes)
    # tiny: the next state depends on the token only, so the trace is gone at d = 2
    trace = {r["d"]: r["value"] for r in recs if r["metric"] == "trace_kl"}
    assert trace[1] > 0 and all(trace[d] == 0.0 for d in (2, 3, 4))
    half = {r["metric"]: r["value"] for r in recs if r["metric"].startswith("half_life_trace")}
    assert half == {
        "half_life_trace": 2.0,
        "half_life_trace_ci_low": 2.0,
        "half_life_trace_ci_high": 2.0,
    }


def test_a_learner_run_records_its_curves_and_its_training_budget(tmp_path):
    recs = records(RecoveryConfig(learner=LEARNER, probe=PROBE), tmp_path)
    metrics = {r["metric"] for r in recs}
    assert {"excess_kl", "excess_regret", "trace_kl", "demo_tokens"} <= metrics
    assert next(r["value"] for r in recs if r["metric"] == "demo_tokens") == 20 * 8
