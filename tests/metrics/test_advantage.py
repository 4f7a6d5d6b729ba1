"""The performance-difference regret: its expectation is the exact regret at every L."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from irlhf.metrics.advantage import expert_values, pdl_regret
from irlhf.metrics.exposure import exact_return
from irlhf.policies import TabularPolicy
from irlhf.types import Sequences
from irlhf.worlds import make_world


def all_sequences(world, policy, horizon):
    """Every (start, action sequence) as Sequences, with its probability under `policy`."""
    starts = torch.nonzero(world.start).flatten().tolist()
    rows, probs = [], []
    for start in starts:
        for actions in itertools.product(range(world.vocab_size), repeat=horizon):
            prob, state = float(world.start[start]), start
            for a in actions:
                prob *= float(policy.probs[state, a])
                state = int(world.transition[state, a])
            rows.append([world.vocab_size + start, *actions])
            probs.append(prob)
    tokens = torch.tensor(rows)
    seqs = Sequences.from_prompt_and_completion(tokens[:, :1], tokens[:, 1:])
    return seqs, torch.tensor(probs, dtype=torch.float64)


def test_expectation_over_every_sequence_is_the_exact_regret_at_every_length():
    """Enumerate every sequence of a tiny world under a random policy: the probability-weighted
    mean of the per-sequence sums equals J_L(expert) - J_L(policy), both by exact DP."""
    world = make_world("tiny", reward_spread=1.0, seed=2)
    H = 4
    g = torch.Generator().manual_seed(0)
    policy = TabularPolicy.from_logits(torch.randn(world.n_states, world.vocab_size, generator=g))
    seqs, weights = all_sequences(world, policy, H)
    probs = policy.probs[world.states(seqs)[:, 1:]]  # (B, H, V): the policy at each prefix
    per_sequence = pdl_regret(world, seqs, probs, expert_values(world, H))
    got = (weights[:, None] * per_sequence).sum(dim=0).numpy()
    want = [exact_return(world, world.expert, L) - exact_return(world, policy, L) for L in
            range(1, H + 1)]  # fmt: skip
    assert weights.sum().item() == pytest.approx(1.0)
    assert np.allclose(got, want, atol=1e-10)
    assert abs(want[-1]) > 0.1  # a regret worth testing


def test_the_expert_itself_has_zero_regret_on_every_roll_out():
    world = make_world("flipflop-absorbing", horizon=16)
    seqs = world.rollout(world.expert, 64, torch.Generator().manual_seed(0))
    probs = world.expert.probs[world.states(seqs)[:, 1:]]
    out = pdl_regret(world, seqs, probs, expert_values(world, 16))
    assert out.abs().max().item() < 1e-10


def test_refuses_mismatched_shapes_and_short_values():
    world = make_world("flipflop-absorbing", horizon=8)
    seqs = world.rollout(world.expert, 4, torch.Generator().manual_seed(0))
    probs = world.expert.probs[world.states(seqs)[:, 1:]]
    with pytest.raises(ValueError, match="probs must be"):
        pdl_regret(world, seqs, probs[:, :-1], expert_values(world, 8))
    with pytest.raises(ValueError, match="expert values for 4 steps"):
        pdl_regret(world, seqs, probs, expert_values(world, 4))
