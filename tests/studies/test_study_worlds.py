"""The compounding and outperform studies in the neural oracle world (`--world oracle`): the world
option's validation (study registry, configs, CLI), and tiny end-to-end runs whose summaries have
the documented keys and numbers within the bounds that hold by construction."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from irlhf.algorithms.dagger import DAggerConfig
from irlhf.algorithms.gkd import GKDConfig
from irlhf.algorithms.reward_model import RewardModelConfig
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.cli import app
from irlhf.experiments.config import resolved, run_id
from irlhf.experiments.errors import ConfigError
from irlhf.kinds.common import PolicySpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.world_spec import OracleWorldSpec, TextWorldSpec, world_name
from irlhf.studies import compounding, compounding_lm, outperform
from irlhf.studies.base import STUDIES, check_world, run_study, study_configs


def test_each_study_builds_its_grid_in_every_world_it_lists() -> None:
    for study, worlds in ((compounding.STUDY, WORLDS_C), (outperform.STUDY, WORLDS_O)):
        assert study.worlds == worlds
        for world in worlds:
            grid = study_configs(study, "quick", world)
            assert {world_name(c.world) for c in grid} == {world}
            for config in grid:  # a resolved config reads back to the same run
                back = type(config).model_validate(resolved(config))
                assert type(back.world) is type(config.world)
                assert run_id(back) == run_id(config)
        assert study_configs(study, "quick") == study_configs(study, "quick", "automaton")
    # automaton worlds carry no tag, so their run ids are those of before the option existed
    assert all("kind" not in resolved(c)["world"] for c in compounding.configs("quick"))


WORLDS_C = ("automaton", "flipflop", "oracle", "text")
WORLDS_O = ("automaton", "oracle", "flipflop")


def test_configs_gets_the_world_only_outside_the_default_one() -> None:
    calls = []

    def grid(*args):
        calls.append(args)
        return compounding.configs("quick")[:1]

    study = dataclasses.replace(compounding.STUDY, configs=grid)
    for world in (None, "automaton", "oracle"):
        study_configs(study, "quick", world)
    assert calls == [("quick",), ("quick",), ("quick", "oracle")]  # plug-ins keep (profile)


def test_an_unsupported_world_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"--world: study outperform supports: automaton, "):
        check_world(outperform.STUDY, "text")
    fixed = dataclasses.replace(outperform.STUDY, worlds=())
    with pytest.raises(ConfigError, match="runs in one fixed world"):
        check_world(fixed, "oracle")
    assert check_world(fixed, None) is None and check_world(compounding.STUDY, None) == "automaton"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["study", "outperform", "--world", "text"], "--world: study outperform supports: "),
        (
            ["study", "compounding", "--world", "mars"],
            "supports: automaton, flipflop, oracle, text",
        ),
        (["reproduce", "--world", "mars"], "--world: no study runs in it"),
    ],
)
def test_cli_rejects_an_unsupported_world_in_one_line(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not any(tmp_path.iterdir()), "bad input must not write anything"


# ---- tiny end-to-end runs in the oracle world --------------------------------------------------

TINY_WORLD = {"vocab_size": 24, "n_embd": 16, "n_head": 2, "n_layer": 1}
TINY_STUDENT = PolicySpec(kind="causal_lm", n_layer=1, n_embd=16, n_head=2)


def _run(monkeypatch, tmp_path: Path, study, configs, world: str = "oracle") -> dict:
    patched = dataclasses.replace(study, configs=lambda profile, world: configs)
    monkeypatch.setitem(STUDIES, study.name, patched)
    out = tmp_path / "out"
    summary = run_study(study.name, "quick", out, executor="inline", progress=False, world=world)
    assert json.loads((out / "summary.json").read_text()) == summary
    record = json.loads((out / "study.json").read_text())
    assert record["world"] == world and record["title"].endswith(f"({world} world)")
    assert record["description"] == study.descriptions[world]
    assert record["title"].startswith(study.titles.get(world, study.title))
    if study.name == "compounding":  # no inverse RL outside the automaton
        assert "inverse RL" not in record["title"] and "inverse RL" in study.title
    return summary


def _tiny_imitation(config: ImitationConfig, world, demos: int = 8) -> ImitationConfig:
    """A study config shrunk to seconds: tiny world, student, data and fits."""
    fit = SFTConfig(steps=8, batch_size=8)
    labels = config.dagger.labels
    # the equal-budget BC arm keeps more demonstrations than the others (that is how it is told)
    equal = config.algorithm == "sft" and config.sft.steps == config.gkd.steps
    return config.model_copy(
        update={
            "world": world,
            "policy": TINY_STUDENT,
            "demonstrations": config.demonstrations.model_copy(
                update={"n": 2 * demos if equal else demos}
            ),
            "sft": fit,
            "dagger": DAggerConfig(rounds=1, rollouts_per_round=4, labels=labels, fit=fit),
            "gkd": GKDConfig(steps=8, batch_size=8),
            "mc_samples": 16,
        }
    )


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_compounding_in_the_oracle_world_end_to_end(tmp_path, monkeypatch) -> None:
    horizon = 8
    tiny = [
        _tiny_imitation(c, OracleWorldSpec(horizon=horizon, seed=c.seed, **TINY_WORLD))
        for c in compounding.configs("quick", "oracle")
        if c.seed < 2
    ]
    summary = _run(monkeypatch, tmp_path, compounding.STUDY, tiny)
    assert {"world", "learners", "curves", "headline", "definitions", "interval"} <= set(summary)
    rows = {r["learner"]: r for r in summary["learners"]}
    assert set(rows) == set(compounding_lm.LEARNERS)
    for r in rows.values():
        assert r["seeds"] == 2 and r["max_L"] == horizon and r["fit_lengths"] == [4, 8]
        numbers = [r[k] for k in ("r_exponent", "acc_err", "pct_ex_acc_err", "R", "eps")]
        numbers += [r[k] for k in ("gold_regret", "oracle_nll", "j_model", "j_expert")]
        assert _finite(*numbers), r
        # bounds that hold by construction: KLs and NLLs are >= 0, so R, eps, AccErr >= 0 and
        # %ExAccErr >= -100; gold rewards are in [-1, 1] per token
        assert r["R"] >= 0 and r["eps"] >= 0 and r["acc_err"] >= 0 and r["oracle_nll"] >= 0
        assert r["pct_ex_acc_err"] >= -100
        assert abs(r["gold_regret"]) <= 2 * horizon and abs(r["j_model"]) <= horizon
        assert r["r_exponent_ci_low"] <= r["r_exponent"] <= r["r_exponent_ci_high"]
        assert r["gold_regret_ci_low"] <= r["gold_regret"] <= r["gold_regret_ci_high"]
        assert r["per_step_kl_first"] >= 0 and r["per_step_kl_last"] >= 0
    assert rows["sft"]["oracle_queries"] == 0 < rows["dagger"]["oracle_queries"]
    curve = [c["R"] for c in summary["curves"] if c["learner"] == "sft"]
    assert curve == sorted(curve), "R_<=L is a sum of non-negative terms"
    assert (tmp_path / "out" / "compounding_oracle.png").stat().st_size > 10_000


def test_outperform_in_the_oracle_world_end_to_end(tmp_path, monkeypatch) -> None:
    horizon = 6
    tiny = [
        c.model_copy(
            update={
                "world": OracleWorldSpec(horizon=horizon, seed=c.seed, **TINY_WORLD),
                "policy": TINY_STUDENT,
                "demonstrations": c.demonstrations.model_copy(update={"n": 16}),
                "sft": SFTConfig(steps=8, batch_size=8),
                "rlhf": c.rlhf.model_copy(
                    update={
                        "comparisons_per_round": 16,
                        "reward_model": RewardModelConfig(
                            kind="neural",
                            steps=4,
                            batch_size=8,
                            n_layer=1,
                            n_embd=16,
                            n_head=2,
                            pooling="sum",
                        ),  # fmt: skip
                    }
                ),
                "rloo": RLOOConfig(iterations=2, prompts_per_iteration=4, samples_per_prompt=2),
                "eval_samples": 16,
                "heldout_pairs": 16,
            }
        )
        for c in outperform.configs("quick", "oracle")
        if c.seed < 2 and c.rlhf.comparisons_per_round == 64
    ]
    summary = _run(monkeypatch, tmp_path, outperform.STUDY, tiny)
    assert {"world", "grid", "headline", "interval", "units"} <= set(summary)
    temperatures = sorted({c.demonstrations.temperature for c in tiny})
    assert [r["demo_temperature"] for r in summary["grid"]] == temperatures
    for r in summary["grid"]:
        assert r["seeds"] == 2 and r["comparisons"] == 16
        for key in ("j_sft", "j_rlhf", "j_demonstrator", "j_expert"):
            assert _finite(r[key]) and abs(r[key]) <= horizon, (key, r)
        assert _finite(r["gain"]) and abs(r["gain"]) <= 2 * horizon
        assert r["gain_ci_low"] <= r["gain"] <= r["gain_ci_high"]
        assert 0 <= r["rm_accuracy"] <= 1 and 0 <= r["rm_accuracy_final"] <= 1
        assert 0 <= r["beats_demonstrator"] <= 1
    assert (tmp_path / "out" / "outperform_oracle_gain.png").stat().st_size > 10_000


def test_compounding_in_the_text_world_end_to_end(tmp_path, monkeypatch) -> None:
    from test_degeneration_study import tiny_world  # a tiny corpus and teacher, trained here

    monkeypatch.setenv("IRLHF_DATA", str(tmp_path / "data"))
    text = TextWorldSpec(**{**tiny_world(tmp_path).model_dump(), "horizon": 8})
    tiny = [_tiny_imitation(c, text) for c in compounding.configs("quick", "text")]
    summary = _run(monkeypatch, tmp_path, compounding.STUDY, tiny, world="text")
    assert summary["world"] == "text"
    for r in summary["learners"]:
        assert r["R"] >= 0 and r["eps"] >= 0 and r["pct_ex_acc_err"] >= -100
        assert _finite(r["acc_err_exponent"], r["gold_regret"], r["oracle_nll"])
    assert (tmp_path / "out" / "compounding_text.png").exists()
