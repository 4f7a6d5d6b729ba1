"""The neural inverse-RL arms of the flip-flop compounding study: one student, world, data and
warm start with the BC arm; each method's budget as the module docstring states it."""

import pytest

from irlhf.algorithms.neural_adversarial_irl import NeuralAdversarialIRLConfig, NeuralGAILConfig
from irlhf.algorithms.neural_iq_learn import NeuralIQLearnConfig
from irlhf.kinds.irl_neural import NEURAL_METHODS
from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.studies import compounding_flipflop, compounding_flipflop_irl


@pytest.mark.parametrize(("profile", "seeds"), [("quick", 2), ("default", 2), ("full", 4)])
def test_the_grid_runs_gail_airl_and_iq_learn_from_the_bc_arm(profile, seeds):
    grid = compounding_flipflop_irl.irl_configs(profile)
    _, horizon, n, steps, mc = compounding_flipflop.NEURAL_PROFILES[profile]
    bc = compounding_flipflop.neural_arms(profile)["sft"]
    assert sorted((c.algorithm, c.seed) for c in grid) == sorted(
        (a, s) for a in ("gail", "airl", "iq_learn") for s in range(seeds)
    )
    for config in grid:
        assert config.policy == compounding_flipflop.STUDENT and config.neural
        assert config.world == FlipFlopWorldSpec(
            preset="absorbing", horizon=horizon, seed=compounding_flipflop.WORLD_SEED
        )
        assert config.demonstrations == bc["demonstrations"] and config.demonstrations.n == n
        assert config.pretrain == bc["sft"] and config.pretrain.steps == steps
        assert config.mc_samples == mc
        assert config.method.name == f"neural_{config.algorithm}"


def test_the_default_budgets_are_the_docstrings():
    """8 rounds each; GAIL and AIRL: 64 negatives + 2 x 32 PPO roll-outs per round (1,024
    roll-outs); IQ-Learn: 8 x 32 = 256 steps on 8 x 64 = 512 roll-outs."""
    methods = {c.algorithm: c.method for c in compounding_flipflop_irl.irl_configs("default")}
    gail, airl, iq = methods["gail"], methods["airl"], methods["iq_learn"]
    assert isinstance(gail, NeuralGAILConfig) and type(airl) is not NeuralGAILConfig
    assert isinstance(airl, NeuralAdversarialIRLConfig) and isinstance(iq, NeuralIQLearnConfig)
    for name, method in methods.items():
        assert method.rounds == 8
        assert NEURAL_METHODS[name].rollouts(method) == (512 if name == "iq_learn" else 1024)
    assert gail.policy_step == airl.policy_step and gail.policy_step.iterations == 2
    assert iq.online and iq.rounds * iq.steps_per_round == 256
    doc = compounding_flipflop_irl.__doc__
    assert "1,024 roll-outs" in doc and "256 optimiser steps" in doc and "512 roll-outs" in doc
