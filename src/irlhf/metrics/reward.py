"""Reward metrics: how good a reward model is, and how much a policy gained on the true reward.

* Reward-model quality (Christiano et al. 2017; Ouyang et al. 2022; Llama 2, Touvron et al.
  2023): accuracy on held-out comparisons, and Pearson / Spearman correlation of the model's
  sequence reward with the true return, on the policy's own samples (on-distribution) and on a
  different policy's samples (off-distribution: where an optimiser will push).
* Policy gains: normalised score (J - J_base) / (J_expert - J_base), win rate against a reference
  policy on the true return, and the exact KL divergence between two tabular policies' sequence
  distributions, sum_t E_{s ~ d_t^pi}[KL(pi(.|s) || ref(.|s))] (the quantity RLHF's KL penalty
  and Gao et al. 2022's over-optimisation curves are measured against).

These read the world's ground truth; training code never calls them with a world. None returns
nan: an undefined value (a correlation with a constant, a standard error from one pair) raises
`UndefinedMetric`, nan inputs raise ValueError, and an infinite KL is +inf.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from irlhf.metrics.exposure import _expectation, _kl_rows, float64_table, occupancy
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy, RewardModel, World
from irlhf.types import Comparisons, Sequences
from irlhf.worlds.annotator import sample_completions
from irlhf.worlds.automaton import AutomatonWorld
from irlhf.worlds.base import rollout


def comparison_accuracy(reward_model: RewardModel, comparisons: Comparisons) -> float:
    """Fraction of comparisons where the model scores the chosen sequence higher (ties: 1/2)."""
    if len(comparisons) == 0:
        raise ValueError("comparison_accuracy needs at least one comparison")
    margin = reward_model.score(comparisons.chosen) - reward_model.score(comparisons.rejected)
    if bool(margin.isnan().any()):
        raise ValueError("comparison_accuracy: the reward model scored a sequence nan")
    return float(((margin > 0).double() + 0.5 * (margin == 0).double()).mean())


def reward_correlation(
    reward_model: RewardModel, world: World, seqs: Sequences
) -> dict[str, float]:
    """Pearson and Spearman correlation of the model's sequence reward with the true return.

    Raises `UndefinedMetric` when either side is constant (no correlation) or there are fewer
    than 2 sequences, ValueError when a reward is not finite."""
    predicted = reward_model.score(seqs).double().numpy()
    true = world.true_return(seqs).double().numpy()
    if not (np.isfinite(predicted).all() and np.isfinite(true).all()):
        raise ValueError("reward_correlation: a predicted or true return is not finite")
    if len(predicted) < 2:
        raise UndefinedMetric(f"reward_correlation needs >= 2 sequences (got {len(predicted)})")
    for name, values in (("predicted reward", predicted), ("true return", true)):
        if np.ptp(values) == 0:
            raise UndefinedMetric(f"reward_correlation: the {name} is constant, no correlation")
    return {
        "pearson": float(stats.pearsonr(predicted, true).statistic),
        "spearman": float(stats.spearmanr(predicted, true).statistic),
    }


def reward_correlations(
    reward_model: RewardModel,
    world: AutomatonWorld,
    policy: TabularPolicy | Policy,
    generator: torch.Generator,
    n: int = 1000,
    off_policy: TabularPolicy | Policy | None = None,
) -> dict[str, float]:
    """Correlations on `n` samples of `policy` ("rm/pearson_on", "rm/spearman_on") and of
    `off_policy` (default: uniform over tokens; "rm/pearson_off", "rm/spearman_off"). Raises
    `UndefinedMetric` as `reward_correlation` does."""
    if off_policy is None:
        off_policy = TabularPolicy.uniform(world.n_states, world.vocab_size)
    out = {}
    for where, acting in (("on", policy), ("off", off_policy)):
        corr = reward_correlation(reward_model, world, rollout(world, acting, n, generator))
        out.update({f"rm/{name}_{where}": value for name, value in corr.items()})
    return out


def normalised_score(j: float, j_base: float, j_expert: float) -> float:
    """(J - J_base) / (J_expert - J_base): 0 at the base policy, 1 at the expert."""
    if j_expert == j_base:
        raise ValueError("normalised_score: j_expert equals j_base, the scale is undefined")
    return (j - j_base) / (j_expert - j_base)


def win_rate(
    world: World,
    policy: TabularPolicy | Policy,
    reference: TabularPolicy | Policy,
    n: int,
    generator: torch.Generator,
) -> tuple[float, float]:
    """P(R*(policy's sample) > R*(reference's sample)) for the same prompt, ties counted 1/2,
    from `n` pairs. Returns (rate, standard error); n must be at least 2."""
    if n < 2:
        raise ValueError(f"win_rate needs n >= 2 pairs for a standard error (got {n})")
    prompts, dynamics = world.sample_prompts(n, generator), world.dynamics()
    ours = sample_completions(dynamics, policy, prompts, generator)
    theirs = sample_completions(dynamics, reference, prompts, generator)
    diff = world.true_return(ours) - world.true_return(theirs)
    wins = (diff > 0).double() + 0.5 * (diff == 0).double()
    return float(wins.mean()), float(wins.std() / math.sqrt(n))


def sequence_kl(
    world: AutomatonWorld,
    policy: TabularPolicy,
    reference: TabularPolicy,
    horizon: int | None = None,
) -> float:
    """Exact KL(policy || reference) between the two sequence distributions over `horizon`
    tokens: sum_t sum_s d_t^policy(s) KL(policy(.|s) || reference(.|s)), in nats. +inf when
    the policy reaches a state where the reference gives probability 0 to one of its tokens (a
    state it never reaches adds 0)."""
    horizon = world.horizon if horizon is None else horizon
    per_state = _kl_rows(float64_table(policy), float64_table(reference))  # (S,) in [0, +inf]
    return float(_expectation(occupancy(world, policy, horizon), per_state).sum())
