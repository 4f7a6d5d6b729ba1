"""The neural oracle world: exact expert distributions and NLL (against enumeration), the
demonstrator view, the gold reward's decomposition, and Monte-Carlo exposure metrics in it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from irlhf.metrics.exposure import exposure_bias_mc
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences
from irlhf.worlds import Demonstrations
from irlhf.worlds.oracle import OracleWorld


@pytest.fixture(scope="module")
def world() -> OracleWorld:
    return OracleWorld(vocab_size=16, n_prompts=2, n_layer=1, n_embd=16, horizon=6, seed=3)


def samples(world: OracleWorld, n: int = 8, seed: int = 0) -> Sequences:
    g = torch.Generator().manual_seed(seed)
    return world.demonstrator().sample(world.sample_prompts(n, g), world.horizon, g)


def test_expert_probs_are_distributions_aligned_with_log_probs(world) -> None:
    seqs = samples(world)
    probs = world.expert_probs(seqs)  # (B, T, V)
    assert probs.shape == (8, world.horizon + 1, world.vocab_size)
    assert torch.allclose(probs.sum(-1), torch.ones(8, world.horizon + 1), atol=1e-5)
    assert bool((probs >= 0).all())
    picked = probs[:, 1:].gather(-1, seqs.tokens[:, 1:, None]).squeeze(-1).log()
    assert torch.allclose(world.expert_log_probs(seqs)[:, 1:], picked, atol=1e-5)
    assert bool((world.expert_log_probs(seqs)[:, 0] == 0).all())  # the prompt is not scored


def test_oracle_nll_is_exact_against_the_expert_and_enumeration() -> None:
    world = OracleWorld(vocab_size=3, n_prompts=1, n_layer=1, n_embd=8, horizon=3, seed=1)
    seqs = samples(world, 4)
    expected = -world.expert.log_probs(seqs).double().sum(1) / world.horizon
    assert torch.allclose(world.oracle_nll(seqs), expected, atol=1e-5)
    # every completion of the one prompt: exp(-C * NLL) are probabilities summing to 1
    completions = torch.tensor(list(itertools.product(range(3), repeat=3)))
    prompt = torch.full((len(completions), 1), world.vocab_size)
    every = Sequences.from_prompt_and_completion(prompt, completions)
    total = torch.exp(-world.horizon * world.oracle_nll(every)).sum()
    assert float(total) == pytest.approx(1.0, abs=1e-5)


def test_the_expert_is_far_from_uniform_but_not_deterministic() -> None:
    world = OracleWorld(horizon=16)  # the defaults: V = 256, 2 layers, 64 wide, init_std 0.3
    entropy = world.expert_entropy(32)
    assert 0.3 * math.log(256) < entropy < 0.8 * math.log(256)


def test_demonstrator_temperature_and_noise(world) -> None:
    seqs = samples(world)
    probs = world.expert_probs(seqs)
    greedy = world.demonstrator(temperature=0.0)
    assert torch.equal(greedy.next_token_logits(seqs).argmax(-1)[:, 1:], probs.argmax(-1)[:, 1:])
    noisy = world.demonstrator(epsilon=1.0).next_token_logits(seqs).exp()
    assert torch.allclose(noisy, torch.full_like(noisy, 1 / world.vocab_size), atol=1e-6)
    # epsilon-mixed sampling: the first token's frequencies match the mixture (chi-square)
    half = world.demonstrator(epsilon=0.5)
    prompts = torch.full((4000, 1), world.vocab_size)
    first = half.sample(prompts, 1, torch.Generator().manual_seed(1)).tokens[:, 1]
    one = Sequences.from_prompt_and_completion(prompts[:1], first[:1, None])
    expected = half.next_token_logits(one).exp()[0, 1]  # (V,) the mixture at the first step
    counts = torch.bincount(first, minlength=world.vocab_size).double()
    chi2 = ((counts - 4000 * expected) ** 2 / (4000 * expected)).sum()
    assert float(chi2) < 40  # df = 15: P(chi2 > 40) < 0.001


def test_a_degraded_oracle_labels_and_acts_in_an_lm_world(world) -> None:
    """temperature / epsilon apply to the LM expert too (they used to read a table's `.probs`):
    soft labels equal the degraded demonstrator's distributions, hard labels and `act` draw
    from them, each charged once per position."""
    from irlhf.worlds import ExpertOracle

    seqs, g = samples(world, 6), torch.Generator().manual_seed(5)
    oracle = ExpertOracle(world, temperature=0.0, epsilon=0.25)
    soft = oracle.label(seqs, soft=True)
    mask = seqs.completion_mask
    expected = world.demonstrator(0.0, 0.25).next_token_logits(seqs).exp()
    torch.testing.assert_close(soft.probs[mask], expected[mask])
    greedy = world.expert_probs(seqs).argmax(-1)
    # a quarter of uniform noise over 16 tokens: the argmax gets 0.75 + 0.25 / 16
    picked = soft.probs[mask].gather(-1, greedy[mask][:, None]).squeeze(-1)
    assert torch.allclose(picked, torch.full_like(picked, 0.75 + 0.25 / 16), atol=1e-5)
    hard = oracle.label(seqs, soft=False, generator=g)
    assert bool((hard.actions[mask] >= 0).all()) and bool((hard.actions[~mask] == -1).all())
    rows = torch.tensor([True, False, True, True, False, True])
    tokens = oracle.act(seqs, rows, g)
    assert bool((tokens[~rows] == -1).all()) and bool((tokens[rows] >= 0).all())
    assert oracle.queries == 2 * int(mask.sum()) + int(rows.sum())
    greedy_oracle = ExpertOracle(world, temperature=0.0)
    prefixes = Sequences.from_prompt_and_completion(seqs.tokens[:, :1], seqs.tokens[:, 1:4])
    after = greedy_oracle.act(prefixes, torch.ones(6, dtype=torch.bool), g)
    completion = torch.cat([seqs.tokens[:, 1:4], after[:, None]], dim=1)
    extended = Sequences.from_prompt_and_completion(seqs.tokens[:, :1], completion)
    assert torch.equal(after, world.expert_probs(extended)[:, -1].argmax(-1))


def test_greedy_demonstrator_follows_the_argmax(world) -> None:
    g = torch.Generator().manual_seed(0)
    seqs = world.demonstrator(temperature=0.0).sample(world.sample_prompts(4, g), world.horizon, g)
    argmax = world.expert_probs(seqs).argmax(-1)  # (B, T): position t predicts token t
    assert torch.equal(seqs.tokens[:, 1:], argmax[:, 1:])


def test_gold_reward_decomposes_and_dynamics_hide_the_expert(world) -> None:
    seqs = samples(world)
    rewards = world.true_rewards(seqs)
    assert rewards.dtype == torch.float64 and bool((rewards[:, 0] == 0).all())
    assert bool((rewards.abs() <= 1).all())
    assert torch.allclose(world.true_return(seqs), rewards.sum(1))
    assert torch.equal(world.true_return(seqs), OracleWorld(world.spec).true_return(seqs))
    dynamics = world.dynamics()
    assert (dynamics.vocab_size, dynamics.horizon, dynamics.prompt_length) == (16, 6, 1)
    assert not hasattr(dynamics, "expert") and not hasattr(dynamics, "true_rewards")
    demos = Demonstrations.collect(world, 5, torch.Generator().manual_seed(0))
    assert demos.sequences.tokens.shape == (5, 7) and demos.n_tokens == 30


def test_monte_carlo_exposure_in_the_oracle_world(world) -> None:
    g = torch.Generator().manual_seed(0)
    expert = exposure_bias_mc(world, world.demonstrator(), 16, g, batch_size=8)
    assert np.allclose(expert.R, 0, atol=1e-6) and np.allclose(expert.eps, 0, atol=1e-6)
    student = CausalLMPolicy.tiny(world.token_vocab_size, world.vocab_size, 1, 16, 2, 7)
    exposure = exposure_bias_mc(world, student, 16, g, batch_size=8)
    assert len(exposure.pct_ex_acc_err) == world.horizon
    assert bool((exposure.eps > 0).all()) and np.isfinite(exposure.pct_ex_acc_err).all()
    assert np.isfinite(exposure.regret).all() and np.isfinite(exposure.R_se).all()
