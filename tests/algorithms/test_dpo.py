"""DPO: the margin it optimises, its gain over SFT, and neural policies."""

import copy
import math

import numpy as np
import pytest
import torch
from scipy import stats

from irlhf.algorithms.dpo import DPOConfig, train_dpo
from irlhf.algorithms.reward_model import sequence_log_probs
from irlhf.algorithms.sft import train_sft
from irlhf.metrics.exposure import exact_return
from irlhf.policies import TabularPolicy
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.worlds import Demonstrations, make_world
from irlhf.worlds.annotator import Annotator, sample_pairs


def sft_and_comparisons(seed: int, n: int = 300, horizon: int | None = None):
    """SFT on 50 temperature-2 demonstrations of the spread world, then n comparisons of pairs
    of SFT samples by a beta = 1 annotator."""
    world = make_world("spread", seed=seed, **({} if horizon is None else {"horizon": horizon}))
    g = torch.Generator().manual_seed(seed)
    demos = Demonstrations.collect(world, 50, g, temperature=2.0)
    sft = train_sft(TabularPolicy.uniform(32, 16), demos, world.dynamics()).policy
    a, b = sample_pairs(world.dynamics(), sft, n, g)
    return world, sft, Annotator(world).compare(a, b, g), g


def margin(policy, comparisons, dynamics) -> float:
    """Mean log pi(chosen) - log pi(rejected)."""
    chosen = sequence_log_probs(policy, comparisons.chosen, dynamics)
    return float((chosen - sequence_log_probs(policy, comparisons.rejected, dynamics)).mean())


def test_dpo_increases_the_chosen_over_rejected_margin():
    world, sft, comparisons, g = sft_and_comparisons(0)
    trained = train_dpo(sft, sft, comparisons, world.dynamics(), DPOConfig(), g)
    policy, records = trained.policy, trained.records
    assert len(records) == DPOConfig().steps
    # At step 0 the policy is the reference: every implicit reward is 0 and the loss is log 2.
    assert records[0]["loss/dpo"] == pytest.approx(math.log(2))
    assert records[0]["dpo/margin"] == pytest.approx(0.0, abs=1e-9)
    assert records[-1]["loss/dpo"] < records[0]["loss/dpo"]
    assert records[-1]["dpo/accuracy"] > 0.8
    dynamics = world.dynamics()
    assert margin(policy, comparisons, dynamics) > margin(sft, comparisons, dynamics) + 1.0


def test_minibatch_dpo_and_zero_steps():
    world, sft, comparisons, g = sft_and_comparisons(1, n=64, horizon=8)
    trained = train_dpo(sft, sft, comparisons, world.dynamics(), DPOConfig(steps=0), g)
    same, records = trained.policy, trained.records
    assert records == [] and torch.allclose(same.probs, sft.probs)
    config = DPOConfig(steps=30, batch_size=16)
    trained = train_dpo(sft, sft, comparisons, world.dynamics(), config, g)
    policy, records = trained.policy, trained.records
    assert len(records) == 30
    assert margin(policy, comparisons, world.dynamics()) > margin(
        sft, comparisons, world.dynamics()
    )


@pytest.mark.slow
def test_dpo_improves_the_true_return_over_sft():
    """5 seeds, 300 comparisons each, default config (beta 0.1, 100 steps, lr 0.01): one-sided
    paired t-test on the exact true return. Measured: SFT 12.2, DPO 26.0 (+13.8), p = 3e-5
    (RLHF on the same setup reaches ~42). Much longer training (300 steps, lr 0.05) overfits:
    KL ~53 nats and no significant gain."""
    sft_returns, dpo_returns = [], []
    for seed in range(5):
        world, sft, comparisons, g = sft_and_comparisons(seed)
        policy = train_dpo(sft, sft, comparisons, world.dynamics(), DPOConfig(), g).policy
        sft_returns.append(exact_return(world, sft))
        dpo_returns.append(exact_return(world, policy))
    test = stats.ttest_rel(dpo_returns, sft_returns, alternative="greater")
    assert test.pvalue < 0.01, (sft_returns, dpo_returns)
    assert np.mean(dpo_returns) > np.mean(sft_returns) + 5


class CountingPolicy:
    """A neural reference that counts how many sequences it scores."""

    def __init__(self, policy):
        self.policy, self.scored = policy, 0
        self.device = policy.device

    def log_probs(self, seqs):
        self.scored += seqs.batch_size
        return self.policy.log_probs(seqs)


def test_dpo_trains_a_neural_policy_against_a_reference_scored_once():
    world, _, comparisons, g = sft_and_comparisons(2, n=48, horizon=4)
    policy = CausalLMPolicy.tiny(
        world.token_vocab_size, world.vocab_size, n_layer=1, n_embd=32, max_length=8
    )
    reference = CountingPolicy(copy.deepcopy(policy))
    config = DPOConfig(steps=25, batch_size=16, lr=3e-3)
    result = train_dpo(policy, reference, comparisons, world.dynamics(), config, g)
    trained, records = result.policy, result.records
    assert trained is policy
    assert reference.scored == 2 * 48  # chosen and rejected, once, before training
    with torch.no_grad():
        before = margin(reference.policy, comparisons, None)
        after = margin(policy, comparisons, None)
    assert after > before + 0.5, (before, after)
    assert records[0]["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)


def test_max_grad_norm_clips_every_step(monkeypatch):
    """`max_grad_norm` clips the gradient before each optimiser step (None: never)."""
    from irlhf.algorithms import dpo

    world, sft, comparisons, g = sft_and_comparisons(seed=0, n=20)
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm):
        norms.append(max_norm)
        return clip(params, max_norm)

    monkeypatch.setattr(dpo.nn.utils, "clip_grad_norm_", recording_clip)
    train_dpo(sft, sft, comparisons, world.dynamics(), DPOConfig(steps=3), g)
    assert norms == []
    train_dpo(sft, sft, comparisons, world.dynamics(), DPOConfig(steps=3, max_grad_norm=0.5), g)
    assert norms == [0.5] * 3
