"""Shared by the policy-gradient tests (the shared path, PPO, RLOO): a tiny transformer over V
action tokens after a one-token prompt (id V), a simple reward, and Monte-Carlo measures of a
trained policy."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from irlhf.algorithms import policy_gradient as pg
from irlhf.algorithms.result import Trained
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences

V, LENGTH = 16, 4  # action tokens (id V is the prompt), completion length


def tiny_policy(seed: int = 0) -> CausalLMPolicy:
    return CausalLMPolicy.tiny(V + 1, V, n_layer=2, n_embd=32, n_head=2, max_length=32, seed=seed)


def prompts(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.full((n, 1), V, dtype=torch.long)


def contains_three(seqs: Sequences) -> torch.Tensor:
    """+1 when the completion contains token 3 (about 1 - (15/16)^4 = 0.23 for a uniform policy)."""
    return ((seqs.tokens == 3) & seqs.completion_mask).any(1).float()


def zero(seqs: Sequences) -> torch.Tensor:
    return torch.zeros(seqs.batch_size)


def mean_reward(policy: CausalLMPolicy, n: int = 512) -> float:
    g = torch.Generator().manual_seed(123)
    return contains_three(policy.sample(prompts(n, g), LENGTH, g)).mean().item()


def sequence_kl(policy: CausalLMPolicy, reference: CausalLMPolicy, n: int = 512) -> float:
    """Monte-Carlo KL(policy || reference) per sequence (summed k1 over sampled tokens)."""
    g = torch.Generator().manual_seed(7)
    seqs = policy.sample(prompts(n, g), LENGTH, g)
    with torch.inference_mode():
        return (pg.forward(policy, seqs)[0] - pg.forward(reference, seqs)[0]).sum(1).mean().item()


def reward_before_and_after(
    train: Callable[..., Trained[CausalLMPolicy, None]], config: Any, seed: int
) -> tuple[float, float, list[dict]]:
    """`mean_reward` of tiny_policy(seed) before and after `train` against `contains_three` (with
    a generator seeded `seed`), and the training records."""
    policy = tiny_policy(seed)
    before = mean_reward(policy)
    trained = train(
        policy, contains_three, prompts, config, generator=torch.Generator().manual_seed(seed)
    )
    return before, mean_reward(trained.policy), trained.records


def kl_drift_stay_and_pull(
    train: Callable[..., Trained[CausalLMPolicy, None]], drift: Any, anchor: Any
) -> tuple[float, float, float]:
    """The KL penalty at work, as `sequence_kl` to a frozen copy of tiny_policy(0): after `train`
    against `contains_three` with `drift` (kl_coef 0, so the policy drifts), then after `train`
    against a zero reward with `anchor` (a large kl_coef) from the reference itself (it should
    stay) and from the drifted policy (it should come back)."""
    policy = tiny_policy(0)
    reference = pg.frozen_reference(policy)
    policy = train(policy, contains_three, prompts, drift).policy
    drifted = sequence_kl(policy, reference)
    stayed = train(tiny_policy(0), zero, prompts, anchor, reference).policy
    pulled = train(copy.deepcopy(policy), zero, prompts, anchor, reference).policy
    return drifted, sequence_kl(stayed, reference), sequence_kl(pulled, reference)
