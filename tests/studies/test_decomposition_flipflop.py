"""Study `decomposition --world flipflop`: the grid (arms, budgets, world) and a tiny end-to-end
run whose summary has the documented keys and claims with valid verdicts."""

import dataclasses
import json
import math

import pytest

from irlhf.algorithms.dagger import DAggerConfig
from irlhf.algorithms.gkd import GKDConfig
from irlhf.algorithms.ppo import PPOConfig
from irlhf.algorithms.reward_model import RewardModelConfig
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import PolicySpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.irl_config import IRLConfig
from irlhf.kinds.rlhf import RLHFRunConfig
from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.studies import decomposition, decomposition_flipflop, outperform_flipflop
from irlhf.studies.base import STUDIES, run_study, study_configs
from irlhf.studies.budgets import EQUAL_ARM

VERDICTS = {"holds", "does not hold", "inconclusive"}


def test_the_study_lists_the_flipflop_world_after_its_default_one():
    assert decomposition.STUDY.worlds == ("automaton", "flipflop")
    assert decomposition.STUDY.reproduce_worlds == ("automaton", "flipflop")
    assert "flipflop" in decomposition.STUDY.descriptions


@pytest.mark.parametrize("profile", ["quick", "default", "full"])
def test_every_cell_has_the_arms_on_the_same_demonstrations_at_equal_budgets(profile):
    grid = study_configs(decomposition.STUDY, profile, "flipflop")
    seeds, temperatures, steps, *_ = decomposition_flipflop.PROFILES[profile]
    assert {c.world for c in grid} == {decomposition_flipflop.WORLD}
    assert (
        decomposition_flipflop.WORLD.preset == "spread" and decomposition_flipflop.WORLD.seed == 0
    )
    assert {c.policy for c in grid} == {decomposition_flipflop.STUDENT}
    horizon = decomposition_flipflop.WORLD.horizon
    for temperature in temperatures:
        for seed in range(seeds):
            cell = [
                c for c in grid if c.seed == seed and c.demonstrations.temperature == temperature
            ]
            rlhf = [c for c in cell if isinstance(c, RLHFRunConfig)]
            imitation = {c.algorithm: c for c in cell if isinstance(c, ImitationConfig)}
            assert len(rlhf) == 1 and "sft_equal" in rlhf[0].arms
            if profile == "default":  # outperform's cell: `irlhf reproduce` runs it once
                assert rlhf[0] in outperform_flipflop.configs(profile)
            assert set(imitation) == {"sft", "dagger", "gkd"}
            n = decomposition_flipflop.DEMONSTRATIONS
            assert rlhf[0].demonstrations.n == n and rlhf[0].sft.steps == steps
            for name in ("dagger", "gkd"):  # exposure-only: imitate the same demonstrator
                assert imitation[name].oracle == "demonstrator"
                assert imitation[name].demonstrations.n == n
            dagger, gkd = imitation["dagger"].dagger, imitation["gkd"].gkd
            # equal optimiser steps, and oracle queries within 5% of each other
            assert (dagger.rounds + 1) * dagger.fit.steps == gkd.steps == steps
            queries = gkd.expected_queries(n, horizon)
            assert abs(dagger.expected_queries(horizon) / queries - 1) < 0.05
            equal = imitation["sft"]
            assert equal.sft.steps == steps
            assert equal.demonstrations.n == n + math.ceil(queries / horizon)
            irl = {c.algorithm for c in cell if c.kind == "irl"}
            assert irl == (set(decomposition_flipflop.IRL_ARMS) if profile == "full" else set())


def tiny(config):
    """A grid config shrunk to seconds: horizon 16, a 1 x 16 student, a few steps."""
    world = FlipFlopWorldSpec(preset="spread", horizon=16, seed=0)
    student = PolicySpec(kind="causal_lm", arch="llama", n_layer=1, n_embd=16, n_head=2)
    fit = SFTConfig(steps=3, batch_size=4, lr=3e-3)
    small = {"world": world, "policy": student, "sft": fit}
    if isinstance(config, RLHFRunConfig):
        reward_model = RewardModelConfig(kind="neural", steps=2, n_layer=1, n_embd=16)
        return config.model_copy(
            update={
                **small,
                "demonstrations": config.demonstrations.model_copy(update={"n": 8}),
                "rlhf": config.rlhf.model_copy(
                    update={"comparisons_per_round": 6, "reward_model": reward_model}
                ),
                "rloo": RLOOConfig(iterations=2, prompts_per_iteration=2, samples_per_prompt=2),
                "eval_samples": 8,
                "heldout_pairs": 10,
            }
        )
    if isinstance(config, IRLConfig):
        step = PPOConfig(iterations=1, prompts_per_iteration=2, samples_per_prompt=2, epochs=1)
        method = config.method.model_copy(
            update={"rounds": 1, "rollouts_per_round": 4, "disc_steps": 2, "policy_step": step}
        )
        return config.model_copy(
            update={
                "world": world,
                "policy": student,
                "pretrain": fit,
                "method": method,
                "demonstrations": config.demonstrations.model_copy(update={"n": 8}),
                "mc_samples": 8,
            }
        )
    n = 8 if config.algorithm != "sft" else 16  # the equal-budget arm keeps more demonstrations
    return config.model_copy(
        update={
            **small,
            "demonstrations": config.demonstrations.model_copy(update={"n": n}),
            "dagger": DAggerConfig(rounds=1, rollouts_per_round=4, beta0=0.0, fit=fit),
            "gkd": GKDConfig(steps=3, batch_size=4),
            "mc_samples": 8,
        }
    )


@pytest.mark.slow
def test_a_tiny_run_has_the_documented_keys_and_valid_verdicts(tmp_path, monkeypatch):
    gail = next(c for c in decomposition.configs("full", "flipflop") if c.kind == "irl")
    quick = decomposition.configs("quick", "flipflop")
    configs = [tiny(c) for c in quick] + [tiny(gail.model_copy(update={"seed": s})) for s in (0, 1)]
    patched = dataclasses.replace(decomposition.STUDY, configs=lambda profile, world: configs)
    monkeypatch.setitem(STUDIES, "decomposition", patched)
    summary = run_study(
        "decomposition", "quick", tmp_path, executor="inline", progress=False, world="flipflop"
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["world"] == "flipflop"
    assert set(decomposition_flipflop.KEYS) <= set(summary)
    methods = (
        "sft",
        EQUAL_ARM,
        "dagger",
        "gkd",
        gail.algorithm,
        decomposition_flipflop.EQUAL_RLHF,
        "rlhf",
    )
    rows = {r["method"]: r for r in summary["rows"]}
    assert set(rows) == {*methods, *decomposition_flipflop.REFERENCES}
    for method in methods:
        assert rows[method]["seeds"] == 2
        assert rows[method]["j_ci_low"] <= rows[method]["j_mean"] <= rows[method]["j_ci_high"]
        spent = {"demo_tokens", "learner_rollouts" if method == "gail" else "optimizer_steps"}
        assert spent <= set(rows[method])
    assert rows["dagger"]["oracle_queries"] > 0 and rows["rlhf"]["annotator_comparisons"] == 6
    assert rows[EQUAL_ARM]["demo_tokens"] == 16 * 16 and rows["sft"]["demo_tokens"] == 8 * 16
    (share,) = summary["shares"]
    assert share["best_exposure_only"] in ("dagger", "gkd", gail.algorithm)
    if math.isfinite(share["exposure_share"]):
        assert share["beyond_share"] == pytest.approx(1 - share["exposure_share"])
    else:
        assert share["note"]
    gains = {g["method"]: g for g in summary["gains_over_sft"]}
    assert gains["rlhf"]["mean"] == pytest.approx(rows["rlhf"]["j_mean"] - rows["sft"]["j_mean"])
    assert summary["claims"] and all(c["verdict"] in VERDICTS for c in summary["claims"])
    assert all(c["claim"] and c["evidence"] for c in summary["claims"])
    assert (tmp_path / "decomposition_flipflop.png").stat().st_size > 10_000
