"""The compounding study end to end on a small tabular grid: its outputs and its claim."""

import dataclasses
import json

import pytest

from irlhf.studies import compounding
from irlhf.studies.base import STUDIES, run_study
from irlhf.studies.imitation import ImitationConfig
from irlhf.worlds import AutomatonSpec


@pytest.mark.slow
def test_compounding_study_writes_outputs_and_shows_the_claim(tmp_path, monkeypatch):
    def small(profile):
        return [
            ImitationConfig(
                seed=seed,
                algorithm=algorithm,
                world=AutomatonSpec(preset=preset, horizon=64, seed=seed),
            )
            for preset in compounding.WORLDS
            for algorithm in compounding.ALGORITHMS
            for seed in range(4)
        ]

    monkeypatch.setitem(
        STUDIES, "compounding", dataclasses.replace(compounding.STUDY, configs=small)
    )
    summary = run_study("compounding", "quick", tmp_path, executor="inline", progress=False)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "results.parquet").exists()
    assert (tmp_path / "compounding_regret.png").stat().st_size > 10_000
    rows = {(r["world"], r["algorithm"]): r for r in summary["exponents"]}
    assert set(rows) == {(w, a) for w in compounding.WORLDS for a in compounding.ALGORITHMS}
    for row in rows.values():
        assert row["ci_low"] <= row["exponent"] <= row["ci_high"] and row["seeds"] == 4
    # The claim, at horizon 64 with 4 seeds (the default profile uses 128 and 8 seeds):
    assert rows[("absorbing", "sft")]["ci_low"] > 1.6
    assert rows[("absorbing", "dagger")]["ci_high"] < 1.35
    assert rows[("recoverable", "sft")]["ci_high"] < 1.3
