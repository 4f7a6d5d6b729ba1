"""The `irl` experiment kind: runs, records, validation (one `[method]` table, the chosen
method's), reproducibility and resume, in automaton and flip-flop worlds."""

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from irlhf.algorithms.adversarial_irl import AdversarialIRLConfig, GAILConfig
from irlhf.algorithms.iq_learn import IQLearnConfig
from irlhf.algorithms.maxent_irl import MaxEntIRLConfig
from irlhf.algorithms.neural_adversarial_irl import NeuralAdversarialIRLConfig, NeuralGAILConfig
from irlhf.algorithms.neural_iq_learn import NeuralIQLearnConfig
from irlhf.algorithms.ppo import PPOConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.experiments.config import parse_config, resolved, run_id
from irlhf.experiments.errors import ConfigError
from irlhf.experiments.run import run_one
from irlhf.kinds.common import DemoSpec, PolicySpec, build_policy
from irlhf.kinds.irl import METHODS, IRLConfig
from irlhf.kinds.irl_config import METHOD_TABLES
from irlhf.kinds.irl_neural import NEURAL_METHODS, reward_metrics
from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.worlds import AutomatonSpec, AutomatonWorld
from irlhf.worlds.flipflop import FlipFlopSpec

HORIZON = 12
# Small method configs: the kind's plumbing is under test here, not the methods' quality.
SMALL = {
    "maxent_irl": MaxEntIRLConfig(steps=40),
    "gail": GAILConfig(rounds=3, rollouts_per_round=20),
    "airl": AdversarialIRLConfig(rounds=3, rollouts_per_round=20),
    "iq_learn": IQLearnConfig(rounds=2, steps_per_round=20, online=True, rollouts_per_round=10),
}
LEARNER_ROLLOUTS = {"maxent_irl": 0, "gail": 60, "airl": 60, "iq_learn": 20}


def small_config(algorithm: str, seed: int = 0) -> IRLConfig:
    return IRLConfig(
        seed=seed,
        algorithm=algorithm,
        world=AutomatonSpec(preset="spread", horizon=HORIZON, seed=seed),
        demonstrations=DemoSpec(n=10, temperature=0.5),
        method=SMALL[algorithm],
    )


def scalars(records: list[dict]) -> dict[str, float]:
    return {r["metric"]: r["value"] for r in records if "L" not in r}


@pytest.mark.parametrize("algorithm", list(METHODS))
def test_irl_run_records_exposure_returns_and_recovered_reward_metrics(tmp_path, algorithm):
    result = run_one(small_config(algorithm), tmp_path)
    assert result.status == "done", result.error
    per_length = {}
    for record in result.records:
        if "L" in record:
            per_length.setdefault(record["metric"], {})[record["L"]] = record["value"]
    # The imitation kind's exposure records, at every prefix length.
    assert set(per_length) == {"regret", "eps", "R", "acc_err", "pct_ex_acc_err"}
    assert all(sorted(v) == list(range(1, HORIZON + 1)) for v in per_length.values())
    values = scalars(result.records)
    # Exact returns: regret over the whole horizon is J(expert) - J(model).
    assert math.isclose(
        per_length["regret"][HORIZON], values["j_expert"] - values["j_model"], abs_tol=1e-9
    )
    assert values["demo_tokens"] == 10 * HORIZON
    assert values["learner_rollouts"] == LEARNER_ROLLOUTS[algorithm]
    # Recovered-reward metrics, at the method's own temperature.
    config = SMALL[algorithm]
    expected_temperature = config.kl_coef if algorithm in ("gail", "airl") else config.alpha
    assert values["irl/reward_temperature"] == expected_temperature
    assert -1.0 <= values["irl/adv_corr_demo"] <= 1.0
    # Off the demonstrator's states a method may learn nothing (constant advantages): then no
    # value but a note record saying why, never nan.
    notes = [r["note"] for r in result.records if r["metric"] == "irl/undefined_note"]
    if "irl/adv_corr_off" in values:
        assert -1.0 <= values["irl/adv_corr_off"] <= 1.0 and not notes
    else:
        assert len(notes) == 1 and "irl/adv_corr_off is undefined" in notes[0]
    assert not any(np.isnan(r["value"]) for r in result.records)
    assert values["irl/n_demo_states"] + values["irl/n_off_states"] == 32  # spread: 32 states
    assert np.isfinite(values["irl/transfer_return"])
    # Training curves are logged beside the metrics.
    log = (result.run_dir / "metrics_log.jsonl").read_text().splitlines()
    assert log and all(json.loads(line) for line in log)


def test_irl_runs_are_reproducible(tmp_path):
    """GAIL samples rollouts: the seeded run gives the same numbers twice."""
    first = run_one(small_config("gail", seed=3), tmp_path / "a")
    second = run_one(small_config("gail", seed=3), tmp_path / "b")

    def numbers(result):
        return [r for r in result.records if r["metric"] != "train_seconds"]

    assert numbers(first) == numbers(second) and len(numbers(first)) > 5 * HORIZON


def test_maxent_irl_is_tabular_only_and_the_error_names_the_field():
    with pytest.raises(ValidationError, match='policy.kind = "causal_lm" needs algorithm'):
        IRLConfig(algorithm="maxent_irl", policy=PolicySpec(kind="causal_lm"))
    with pytest.raises(ValidationError, match="algorithm"):
        IRLConfig(algorithm="bc")


@pytest.mark.parametrize("learner", ["tabular", "causal_lm"])
def test_the_method_table_is_the_chosen_methods_and_only_it_is_in_the_run_id(learner):
    """`[method]` holds the settings of the method `algorithm` and `policy.kind` choose (its
    defaults when absent; `name` filled in); the resolved config has no other method's table,
    so changing another method's defaults cannot change a run's id."""
    algorithms = list(METHODS) if learner == "tabular" else list(NEURAL_METHODS)
    for algorithm in algorithms:
        name = algorithm if learner == "tabular" else f"neural_{algorithm}"
        config = IRLConfig(algorithm=algorithm, policy=PolicySpec(kind=learner))
        assert type(config.method) is METHOD_TABLES[name] and config.method.name == name
        assert config.method == METHOD_TABLES[name]()  # the method's defaults
        data = resolved(config)
        assert data["method"]["name"] == name and not set(data) & set(METHOD_TABLES)
        back = IRLConfig.model_validate(data)  # a run's config.json reads back to the same run
        assert back == config and run_id(back) == run_id(config)
    assert run_id(IRLConfig(algorithm="gail")) != run_id(IRLConfig(algorithm="airl"))


def test_the_method_table_takes_a_table_or_the_methods_own_config_and_checks_its_name():
    tagged = IRLConfig.model_validate(
        {"algorithm": "gail", "method": {"rounds": 3}}, strict=True
    )  # as a TOML table arrives
    untagged = IRLConfig(algorithm="gail", method=GAILConfig(rounds=3))
    assert tagged == untagged and tagged.method.rounds == 3 and tagged.method.name == "gail"
    with pytest.raises(ValidationError, match='method.name must be "airl" for algorithm "airl"'):
        IRLConfig.model_validate({"algorithm": "airl", "method": {"name": "gail"}})
    with pytest.raises(ConfigError) as error:  # MaxEnt's field in GAIL's table
        parse_config({"kind": "irl", "algorithm": "gail", "method": {"alpha": 0.1}})
    assert str(error.value).startswith("method.alpha: unknown field (allowed: anchor, disc_l2,")
    assert "reward" in str(error.value) and "alpha" not in str(error.value).split("allowed")[1]


_STEP = PPOConfig(iterations=1, prompts_per_iteration=8, kl_coef=0.0)
NEURAL_SMALL = {
    "gail": NeuralGAILConfig(rounds=2, rollouts_per_round=16, disc_steps=2, policy_step=_STEP),
    "airl": NeuralAdversarialIRLConfig(
        rounds=2, rollouts_per_round=16, disc_steps=2, policy_step=_STEP
    ),
    "iq_learn": NeuralIQLearnConfig(rounds=2, steps_per_round=5, online=True, rollouts_per_round=8),
}
NEURAL_ROLLOUTS = {"gail": 2 * (16 + 8), "airl": 2 * (16 + 8), "iq_learn": 2 * 8}


def neural_config(algorithm: str, seed: int = 0) -> IRLConfig:
    return IRLConfig(
        seed=seed,
        algorithm=algorithm,
        world=AutomatonSpec(preset="tiny", seed=seed),
        policy=PolicySpec(kind="causal_lm", n_layer=1, n_embd=16, n_head=2),
        demonstrations=DemoSpec(n=20),
        pretrain=SFTConfig(steps=5),
        mc_samples=64,
        method=NEURAL_SMALL[algorithm],
    )


@pytest.mark.parametrize("algorithm", list(NEURAL_METHODS))
def test_neural_irl_run_records_monte_carlo_exposure_returns_and_reward_correlations(
    tmp_path, algorithm
):
    result = run_one(neural_config(algorithm), tmp_path)
    assert result.status == "done", result.error
    per_length = {}
    for record in result.records:
        if "L" in record:
            per_length.setdefault(record["metric"], {})[record["L"]] = record["value"]
    # The neural imitation kind's Monte-Carlo exposure records, with standard errors.
    expected = {"regret", "eps", "R", "acc_err", "pct_ex_acc_err", "regret_se", "R_se"}
    assert set(per_length) == expected
    assert all(sorted(v) == [1, 2, 3, 4] for v in per_length.values())  # tiny: horizon 4
    values = scalars(result.records)
    # j_model is J(expert) minus the Monte-Carlo regret at the horizon, with its standard error.
    assert math.isclose(values["j_model"], values["j_expert"] - per_length["regret"][4])
    assert values["j_model_se"] == per_length["regret_se"][4] > 0
    assert math.isfinite(values["j_demonstrator"])
    assert values["demo_tokens"] == 20 * 4
    assert values["learner_rollouts"] == NEURAL_ROLLOUTS[algorithm]
    for name in ("irl/reward_corr_demo", "irl/reward_corr_learner"):
        assert np.isnan(values[name]) or -1.0 <= values[name] <= 1.0
    log = [json.loads(line) for line in (result.run_dir / "metrics_log.jsonl").read_text().split()]
    assert log[0]["phase"] == "pretrain" and log[-1]["round"] == 2


def test_reward_correlation_is_one_for_the_true_reward_and_minus_one_for_its_negative():
    """The metric behind irl/reward_corr_*: the truth (or any positive affine map of it)
    correlates perfectly, its negative perfectly badly."""
    config = neural_config("gail")
    world = AutomatonWorld(config.world)
    policy = build_policy(config, world)
    for reward, expected in (
        (world.true_rewards, 1.0),
        (lambda s: 3 - 2 * world.true_rewards(s), -1.0),
    ):
        values = reward_metrics(config, world, policy, reward)
        assert values["irl/reward_corr_demo"] == pytest.approx(expected)
        assert values["irl/reward_corr_learner"] == pytest.approx(expected)


def test_neural_irl_run_is_reproducible_and_resumes_from_its_checkpoint(tmp_path):
    """Same seed, same numbers; with the run's status removed, the rerun loads the checkpoint
    (no training: the log keeps its length) and ends with the same numbers."""
    config = neural_config("airl", seed=1)

    def numbers(result):  # nan-aware: a constant reward gives a nan correlation
        return [
            {**r, "value": "nan" if math.isnan(r["value"]) else r["value"]}
            for r in result.records
            if r["metric"] != "train_seconds"
        ]

    first = run_one(config, tmp_path / "a")
    second = run_one(config, tmp_path / "b")
    assert numbers(first) == numbers(second) and len(numbers(first)) > 7 * 4
    log_lines = len((first.run_dir / "metrics_log.jsonl").read_text().splitlines())
    (first.run_dir / "status.json").unlink()
    resumed = run_one(config, tmp_path / "a")
    assert not resumed.skipped and numbers(resumed) == numbers(first)
    assert len((first.run_dir / "metrics_log.jsonl").read_text().splitlines()) == log_lines


# The run ids of automaton configs before the `[world]` table took the flip-flop world too: an
# automaton config must resolve and hash exactly as before (cached runs stay valid).
AUTOMATON_RUN_IDS = {
    "default": "4247579fdef8b4c2",
    "spread_gail": "abe936cc5399cdf9",
    "neural_airl": "04bd3f105c10dcac",
    "tiny_table_gail": "3c4c3dd5b1f10c13",
}


def test_automaton_configs_keep_their_run_ids_and_a_flipflop_world_is_tagged():
    spread = AutomatonSpec(preset="spread", horizon=12, seed=3)
    causal_lm = PolicySpec(kind="causal_lm")
    configs = {
        "default": IRLConfig(),
        "spread_gail": IRLConfig(algorithm="gail", world=spread),
        "neural_airl": IRLConfig(algorithm="airl", policy=causal_lm),
        "tiny_table_gail": IRLConfig.model_validate(
            {"algorithm": "gail", "world": {"preset": "tiny", "seed": 2}}
        ),
    }
    assert {name: run_id(c) for name, c in configs.items()} == AUTOMATON_RUN_IDS
    assert "kind" not in resolved(configs["default"])["world"]
    flipflop = IRLConfig.model_validate(
        {"algorithm": "gail", "world": {"kind": "flipflop", "preset": "absorbing"}}
    )
    assert isinstance(flipflop.world, FlipFlopWorldSpec) and flipflop.world.exit_prob == 1 / 16
    assert IRLConfig.model_validate(resolved(flipflop)) == flipflop
    assert IRLConfig(world=FlipFlopSpec(preset="recoverable")).world.kind == "flipflop"
    with pytest.raises(ValidationError, match="oracle"):  # no exact DP: not an irl world
        IRLConfig.model_validate({"world": {"kind": "oracle"}})


def test_tabular_irl_runs_in_the_flipflop_world(tmp_path):
    config = IRLConfig(
        algorithm="gail",
        world=FlipFlopWorldSpec(preset="absorbing", vocab_size=8, horizon=HORIZON),
        demonstrations=DemoSpec(n=10),
        method=SMALL["gail"],
    )
    result = run_one(config, tmp_path)
    assert result.status == "done", result.error
    values = scalars(result.records)
    regret = {r["L"]: r["value"] for r in result.records if r["metric"] == "regret"}
    assert math.isclose(regret[HORIZON], values["j_expert"] - values["j_model"], abs_tol=1e-9)
    assert np.isfinite(values["irl/transfer_return"])


def flipflop_neural_config(algorithm: str) -> IRLConfig:
    """A tiny neural run in the absorbing flip-flop world with a 20 % acting error (so that
    roll-outs enter traps at horizon 16)."""
    return IRLConfig(
        algorithm=algorithm,
        world=FlipFlopWorldSpec(preset="absorbing", horizon=16),
        policy=PolicySpec(kind="causal_lm", n_layer=1, n_embd=16, n_head=2, act_epsilon=0.2),
        demonstrations=DemoSpec(n=20),
        pretrain=SFTConfig(steps=5),
        mc_samples=64,
        method=NEURAL_SMALL[algorithm],
    )


@pytest.mark.parametrize("algorithm", list(NEURAL_METHODS))
def test_neural_irl_in_the_flipflop_world_records_regret_per_length_and_trap_rates(
    tmp_path, algorithm
):
    result = run_one(flipflop_neural_config(algorithm), tmp_path)
    assert result.status == "done", result.error
    regret = {r["L"]: r["value"] for r in result.records if r["metric"] == "regret"}
    assert sorted(regret) == list(range(1, 17))
    values = scalars(result.records)
    assert math.isclose(values["j_model"], values["j_expert"] - regret[16])
    # The imitation kind's trap records (`TrapRollouts`), rates in [0, 1].
    for name in ("trap_entry_rate", "trap_exit_rate", "trap_first_step_entry_rate"):
        assert 0.0 <= values[name] <= 1.0, name
    assert math.isfinite(values["trap_trap_cost"]) and "trap_note" not in values
    assert values["learner_rollouts"] == NEURAL_ROLLOUTS[algorithm]
