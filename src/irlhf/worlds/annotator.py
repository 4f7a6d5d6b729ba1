"""The `Annotator` feedback channel: pairwise preferences on the true return, counted.

The annotator is a Bradley-Terry "human" (Bradley & Terry 1952, as modelled by Christiano et al.
2017): shown two sequences a and b it prefers a with probability

    P(a > b) = sigmoid(beta (R*(a) - R*(b)))

where R* is the world's true return and beta >= 0 its rationality (beta = 0: coin flips; beta ->
inf: always the better one). Each label is then flipped with probability `flip_prob` (label noise
that is independent of the returns). Every comparison counts against `budget`, so reward
modelling, DPO and RLHF are compared with ExpertOracle- and Demonstrations-based methods at equal
feedback cost.

Comparison pairs are drawn as in InstructGPT (Ouyang et al. 2022): two samples of the current
policy for the same prompt (`sample_pairs`). Sampling uses only the dynamics, never the reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor

from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Dynamics, Policy, TabularDynamics, World
from irlhf.types import Comparisons, Sequences
from irlhf.worlds.base import BudgetExceeded


@dataclass
class Annotator:
    """Bradley-Terry preferences on `world.true_return` with rationality `beta`, each label
    flipped with probability `flip_prob`; at most `budget` comparisons (None = unlimited)."""

    world: World
    beta: float = 1.0
    flip_prob: float = 0.0
    budget: int | None = None
    comparisons: int = field(default=0, init=False)
    """Comparisons answered so far (the feedback cost)."""

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ValueError(f"annotator beta must be >= 0 (got {self.beta})")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"annotator flip_prob must be in [0, 1] (got {self.flip_prob})")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"annotator budget must be >= 1 or None (got {self.budget})")

    @property
    def remaining(self) -> int | None:
        """Comparisons left in the budget (None = unlimited)."""
        return None if self.budget is None else self.budget - self.comparisons

    def preference_probs(self, a: Sequences, b: Sequences) -> Tensor:
        """[N] float64 P(the annotator labels a as preferred), label noise included. Not counted:
        this is ground truth, for metrics and tests only."""
        if a.batch_size != b.batch_size:
            raise ValueError(f"compare needs equal batches, got {a.batch_size} and {b.batch_size}")
        margin = self.world.true_return(a) - self.world.true_return(b)  # (N,)
        p = torch.sigmoid(self.beta * margin.double())
        return (1 - self.flip_prob) * p + self.flip_prob * (1 - p)

    def compare(self, a: Sequences, b: Sequences, generator: torch.Generator) -> Comparisons:
        """Label each pair (a[i], b[i]); returns them as (chosen, rejected). Counts len(a)."""
        p_a = self.preference_probs(a, b)  # (N,)
        n = len(p_a)
        if self.budget is not None and self.comparisons + n > self.budget:
            raise BudgetExceeded(
                f"annotator budget {self.budget} exceeded: {self.comparisons} used, {n} asked"
            )
        self.comparisons += n
        a_wins = torch.rand(n, generator=generator, dtype=torch.float64) < p_a  # (N,)
        pick = a_wins.unsqueeze(1)  # (N, 1) broadcast over tokens
        chosen = Sequences(
            torch.where(pick, a.tokens, b.tokens),
            torch.where(pick, a.prompt_mask, b.prompt_mask),
            torch.where(pick, a.completion_mask, b.completion_mask),
        )
        rejected = Sequences(
            torch.where(pick, b.tokens, a.tokens),
            torch.where(pick, b.prompt_mask, a.prompt_mask),
            torch.where(pick, b.completion_mask, a.completion_mask),
        )
        return Comparisons(chosen, rejected)


def sample_completions(
    dynamics: Dynamics,
    policy: TabularPolicy | Policy,
    prompts: Tensor,
    generator: torch.Generator,
    horizon: int | None = None,
) -> Sequences:
    """Continue the given prompts [B, 1] by `horizon` tokens of `policy`.

    A TabularPolicy acts on the latent state (tracked with `dynamics.transition`); any other
    policy is a neural one with `.sample(prompts, max_new_tokens, generator)`."""
    horizon = dynamics.horizon if horizon is None else horizon
    if not isinstance(policy, TabularPolicy):
        device = getattr(policy, "device", "cpu")
        with torch.inference_mode():
            seqs = policy.sample(prompts.to(device), max_new_tokens=horizon, generator=generator)
        return seqs.to("cpu")
    dynamics = cast(TabularDynamics, dynamics)  # a table acts in an automaton
    state = prompts[:, 0] - dynamics.vocab_size  # (B,) the start state
    cdf = policy.probs.cumsum(dim=1)  # (S, V); inverse-CDF sampling is faster than multinomial
    uniforms = torch.rand(len(prompts), horizon, 1, generator=generator, dtype=cdf.dtype)
    actions = torch.empty(len(prompts), horizon, dtype=torch.long)
    for t in range(horizon):
        token = (cdf[state] < uniforms[:, t]).sum(dim=1)  # (B,) first a with CDF >= u
        actions[:, t] = token.clamp_max(dynamics.vocab_size - 1)
        state = dynamics.transition[state, actions[:, t]]
    return Sequences.from_prompt_and_completion(prompts, actions)


def sample_pairs(
    dynamics: Dynamics,
    policy: TabularPolicy | Policy,
    n: int,
    generator: torch.Generator,
    horizon: int | None = None,
) -> tuple[Sequences, Sequences]:
    """n pairs of independent completions of the same n prompts (InstructGPT's comparison data:
    two samples of the current policy per prompt)."""
    if n < 1:
        raise ValueError(f"number of comparison pairs must be >= 1 (got {n})")
    prompts = dynamics.sample_prompts(n, generator)  # (n, 1)
    first = sample_completions(dynamics, policy, prompts, generator, horizon)
    second = sample_completions(dynamics, policy, prompts, generator, horizon)
    return first, second
