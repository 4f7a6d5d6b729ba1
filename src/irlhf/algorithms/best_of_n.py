"""Best-of-n sampling: draw n completions from the reference, keep the one the reward model likes.

The simplest policy "optimised" against a reward model, and the first of Gao et al. 2022's two
over-optimisation curves (gold reward against sqrt(KL) of the best-of-n policy to the reference).
Its KL to the reference is taken to be

    KL(best-of-n || reference) = log n - (n - 1) / n        (Stiennon et al. 2020; Gao et al. 2022)

which is exact when no two sequences tie in reward and the reference puts no mass on any single
sequence (a continuous distribution); for a discrete reference it is an upper bound (Beirami et
al. 2024), approached as the reference spreads over many sequences. `best_of_n_probs` gives the
exact best-of-n distribution over an enumerated set of sequences, so the formula can be checked.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from irlhf.algorithms.reward_model import sequence_log_probs
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Dynamics, Policy, RewardModel
from irlhf.types import Sequences
from irlhf.worlds.annotator import sample_completions

if TYPE_CHECKING:
    from irlhf.worlds.automaton import AutomatonWorld


def best_of_n_kl(n: int) -> float:
    """The analytic KL(best-of-n || reference) = log n - (n - 1) / n, in nats."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 (got {n})")
    return math.log(n) - (n - 1) / n


def best_of_n_sample(
    dynamics: Dynamics,
    reference: TabularPolicy | Policy,
    reward_model: RewardModel,
    n: int,
    n_samples: int,
    generator: torch.Generator,
    horizon: int | None = None,
) -> Sequences:
    """`n_samples` sequences of the best-of-n policy: for each prompt, n completions of the
    reference (tabular or neural), the one with the highest `reward_model.score` kept (the first
    drawn among ties)."""
    if n < 1 or n_samples < 1:
        raise ValueError(f"best-of-n needs n >= 1 and n_samples >= 1 (got {n}, {n_samples})")
    prompts = dynamics.sample_prompts(n_samples, generator)  # (N, 1)
    candidates = sample_completions(
        dynamics, reference, prompts.repeat_interleave(n, dim=0), generator, horizon
    )  # (N * n, ...), the n candidates of prompt i at rows i * n .. i * n + n - 1
    scores = reward_model.score(candidates).view(n_samples, n)  # (N, n)
    best = scores.argmax(dim=1)  # first maximum = first drawn among ties
    return candidates[torch.arange(n_samples) * n + best]


def best_of_n_probs(reference_probs: Tensor, scores: Tensor, n: int) -> Tensor:
    """[M] the exact distribution of the best of n i.i.d. draws from a distribution over M
    sequences (`reference_probs` [M], summing to 1) ranked by `scores` [M].

    With F(x) = P(score <= x), the best draw's score is x with probability F(x)^n - F(x-)^n;
    among sequences tied at x the first such draw wins, so that mass is split in proportion to
    the reference probabilities."""
    if reference_probs.shape != scores.shape or reference_probs.dim() != 1:
        raise ValueError(
            f"reference_probs and scores must both be [M], got {tuple(reference_probs.shape)} "
            f"and {tuple(scores.shape)}"
        )
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1 (got {n})")
    probs = reference_probs.double()
    levels, group = torch.unique(scores, return_inverse=True)  # sorted ascending
    mass = torch.zeros(len(levels), dtype=torch.float64).index_add_(0, group, probs)
    cdf = mass.cumsum(0).clamp(max=1.0)
    below = torch.cat([torch.zeros(1, dtype=torch.float64), cdf[:-1]])
    group_best = cdf**n - below**n  # (G,) P(best score = level g)
    share = torch.where(mass[group] > 0, probs / mass[group].clamp_min(1e-300), 0.0)
    return group_best[group] * share


def enumerate_sequences(
    world: AutomatonWorld, policy: TabularPolicy, horizon: int | None = None
) -> tuple[Sequences, Tensor]:
    """Every (start state, completion) of a tiny automaton world with its probability under
    `policy`: (Sequences [M, 1 + horizon], probs [M]), M = starts * V^horizon. Uses the world's
    start distribution; for tests and exact evaluation of tiny worlds only."""
    horizon = world.horizon if horizon is None else horizon
    V, starts = world.vocab_size, torch.nonzero(world.start > 0).flatten()
    if len(starts) * V**horizon > 2_000_000:
        raise ValueError(f"{len(starts)} x {V}^{horizon} sequences are too many to enumerate")
    completions = torch.tensor(list(itertools.product(range(V), repeat=horizon)), dtype=torch.long)
    completions = completions.view(-1, horizon)  # (V^H, H); horizon 0 gives one empty row
    prompts = (starts + V).repeat_interleave(len(completions)).unsqueeze(1)  # (M, 1)
    seqs = Sequences.from_prompt_and_completion(prompts, completions.repeat(len(starts), 1))
    log_probs = sequence_log_probs(policy, seqs, world.dynamics())  # (M,)
    return seqs, world.start[prompts[:, 0] - V] * log_probs.exp()
