"""RLHF with exact KL-regularised soft policy iteration: arguments, rounds and gains (the solver's
limits and Bellman equations: tests/test_planning.py)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from irlhf.algorithms.rlhf import RLHFConfig, train_rlhf
from irlhf.algorithms.sft import train_sft
from irlhf.metrics.exposure import exact_return
from irlhf.metrics.reward import sequence_kl
from irlhf.planning import kl_regularised_policy
from irlhf.policies import TabularPolicy
from irlhf.worlds import BudgetExceeded, Demonstrations, make_world
from irlhf.worlds.annotator import Annotator


def test_bad_arguments():
    world = make_world("spread")
    reference = TabularPolicy.uniform(world.n_states, world.vocab_size)
    with pytest.raises(ValueError, match="tabular"):
        train_rlhf(
            reference,
            world.dynamics(),
            Annotator(world),
            RLHFConfig(reward_model={"kind": "neural"}),
        )
    with pytest.raises(ValueError, match="kl_coef"):
        RLHFConfig(kl_coef=-1)


def sft_on_spread(seed: int, temperature: float = 2.0, n_demos: int = 50):
    world = make_world("spread", seed=seed)
    g = torch.Generator().manual_seed(seed)
    demos = Demonstrations.collect(world, n_demos, g, temperature=temperature)
    sft = train_sft(TabularPolicy.uniform(32, 16), demos, world.dynamics()).policy
    return world, sft, g


def strict_dynamics(world):
    """Only what `Dynamics` promises (no route back to the world's reward or expert)."""
    d = world.dynamics()
    return SimpleNamespace(
        n_states=d.n_states,
        vocab_size=d.vocab_size,
        token_vocab_size=d.token_vocab_size,
        horizon=d.horizon,
        transition=d.transition.clone(),
        sample_prompts=d.sample_prompts,
        states=d.states,
    )


def test_iterated_rlhf_counts_comparisons_and_records_rounds():
    world, sft, g = sft_on_spread(0)
    annotator = Annotator(world)
    config = RLHFConfig(rounds=3, comparisons_per_round=100)
    trained = train_rlhf(sft, strict_dynamics(world), annotator, config, g)
    policy, records, reward_model = trained.policy, trained.records, trained.learned
    assert annotator.comparisons == 300
    assert [r["round"] for r in records] == [1, 2, 3]
    assert [r["annotator/comparisons"] for r in records] == [100, 200, 300]
    assert [r["rm/comparisons"] for r in records] == [100, 200, 300]
    assert np.isnan(records[0]["rm/fresh_accuracy"])
    assert all(r["rm/fresh_accuracy"] > 0.6 for r in records[1:]), records
    assert reward_model.table.shape == (32, 16)
    assert exact_return(world, policy) > exact_return(world, sft)
    # The policy is the KL-regularised optimum of the final reward model w.r.t. the reference.
    again = kl_regularised_policy(world.dynamics(), reward_model.table, sft, 0.3, 0.95)
    assert torch.allclose(policy.probs, again.probs)
    with pytest.raises(BudgetExceeded):
        train_rlhf(sft, world.dynamics(), Annotator(world, budget=250), config, g)


def test_continuing_from_the_previous_policy_moves_further_from_the_reference():
    world, sft, _ = sft_on_spread(1, temperature=10.0)
    kls = {}
    for anchor in ("reference", "previous"):
        config = RLHFConfig(rounds=3, comparisons_per_round=100, anchor=anchor)
        g = torch.Generator().manual_seed(0)
        policy = train_rlhf(sft, world.dynamics(), Annotator(world), config, g).policy
        kls[anchor] = sequence_kl(world, policy, sft)
    assert kls["previous"] > kls["reference"] > 0


@pytest.mark.slow
def test_rlhf_beats_sft_on_the_spread_world_with_a_temperature_2_demonstrator():
    """6 seeds (world, demonstrations, comparisons), 300 comparisons (beta = 1), kl_coef 0.3:
    a one-sided paired t-test on the exact true return. Measured (spread preset with expert
    alpha = 1): demonstrator 13.3, SFT 12.0, RLHF 42.6, expert 30.7; t = 9.2, p = 1.2e-4."""
    sft_returns, rlhf_returns = [], []
    for seed in range(6):
        world, sft, g = sft_on_spread(seed)
        policy = train_rlhf(
            sft, world.dynamics(), Annotator(world), RLHFConfig(comparisons_per_round=300), g
        ).policy
        sft_returns.append(exact_return(world, sft))
        rlhf_returns.append(exact_return(world, policy))
    test = stats.ttest_rel(rlhf_returns, sft_returns, alternative="greater")
    assert test.pvalue < 0.001, (sft_returns, rlhf_returns, test.pvalue)


def test_the_neural_step_draws_fresh_rollouts_each_round_and_carries_ppo_value_head(
    monkeypatch: pytest.MonkeyPatch,
):
    """Regression: every round used to restart its rollouts from seed 0 and PPO a zero critic."""
    from irlhf.algorithms import ppo
    from irlhf.algorithms.ppo import PPOConfig
    from irlhf.algorithms.rlhf import rl_policy_step
    from irlhf.algorithms.rloo import RLOOConfig
    from irlhf.policies.causal_lm import CausalLMPolicy

    V = 8
    dynamics = SimpleNamespace(
        horizon=3, sample_prompts=lambda n, g: torch.full((n, 1), V, dtype=torch.long)
    )
    reward_model = SimpleNamespace(score=lambda seqs: (seqs.tokens == 3).sum(1).float())
    policy = CausalLMPolicy.tiny(V + 1, V, n_layer=1, n_embd=16, n_head=2, max_length=8)
    rollouts, heads_in, heads_out = [], [], []
    real_rollout, real_train = ppo.pg.rollout, ppo.train_ppo

    def spy_rollout(*args, **kwargs):
        batch, metrics = real_rollout(*args, **kwargs)
        rollouts.append(batch.sequences.tokens.clone())
        return batch, metrics

    def spy_train(*args, value_head, **kwargs):
        heads_in.append(value_head.linear.weight.detach().clone())
        result = real_train(*args, value_head=value_head, **kwargs)
        heads_out.append(value_head.linear.weight.detach().clone())
        return result

    monkeypatch.setattr(ppo.pg, "rollout", spy_rollout)
    monkeypatch.setattr(ppo, "train_ppo", spy_train)
    config = PPOConfig(iterations=2, prompts_per_iteration=8, lr=1e-2)
    step = rl_policy_step(dynamics, "ppo", config, torch.Generator().manual_seed(5))
    start = policy
    for _ in range(2):  # anchor = the start: round 1 copies it, round 2 continues the copy
        policy = step(policy, reward_model, start).policy
    assert len(rollouts) == 4
    assert torch.count_nonzero(heads_in[0]) == 0  # a fresh critic in round 1 (zero init) ...
    assert torch.count_nonzero(heads_out[0]) > 0  # ... that learned something
    torch.testing.assert_close(heads_in[1], heads_out[0])  # round 2 starts from it
    # anchor = the previous policy: the step trains a copy, and the critic is copied onto it
    trained = step(policy, reward_model, policy).policy
    assert trained is not policy
    torch.testing.assert_close(heads_in[2], heads_out[1])
    # with a learning rate too small to move the policy, round 2 must still draw new samples
    rollouts.clear()
    frozen = RLOOConfig(iterations=1, prompts_per_iteration=8, lr=1e-12)
    step = rl_policy_step(dynamics, "rloo", frozen, torch.Generator().manual_seed(5))
    for _ in range(2):
        step(start, reward_model, start)
    assert len(rollouts) == 2 and not torch.equal(rollouts[0], rollouts[1])
    with pytest.raises(ValueError, match="rloo"):
        rl_policy_step(dynamics, "reinforce", config)
