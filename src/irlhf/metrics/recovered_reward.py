"""How good is a reward recovered by inverse RL? Advantage correlation and reward transfer.

A recovered reward is identified only up to shaping and scale (Ng et al. 1999; Fu et al. 2018),
so rewards are compared through their soft-optimal advantages, which shaping leaves unchanged:

    Q_r(s, a) = r(s, a) + gamma V_r(delta(s, a)),   V_r(s) = alpha log sum_a exp(Q_r(s, a) / alpha),
    A_r(s, a) = Q_r(s, a) - V_r(s)                   (= alpha log pi_r(a | s))

(solved exactly by `planning.soft_policy_iteration`). The metric is the Pearson
correlation of A_r with the true A* (the world's reward at the world's alpha and gamma) over every
token of a set of states, computed separately on

  * demonstrator states: visited by the demonstrator with mean per-step occupancy >= threshold;
  * off-distribution states: the rest, where only the reward (not imitation) can say what to do.

Reward transfer (Fu et al. 2018): re-optimise the recovered reward from scratch (the soft-optimal
policy at the world's alpha, unless told otherwise) and report that policy's exact true return
over the horizon. These metrics read the world's ground truth; training code never calls them.

A correlation over a set of fewer than 2 tokens or with constant advantages is undefined: it is
nan (the `irl` kind records it so) and an `UndefinedMetricWarning` says which and why. A reward
that is not finite raises ValueError.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats
from torch import Tensor

from irlhf.metrics.exposure import exact_return, occupancy
from irlhf.metrics.undefined import UndefinedMetricWarning
from irlhf.planning import soft_policy_iteration
from irlhf.policies.tabular import TabularPolicy
from irlhf.worlds.automaton import AutomatonWorld


def soft_advantages(transition: Tensor, reward: Tensor, alpha: float, gamma: float) -> Tensor:
    """[S, V] A(s, a) = Q(s, a) - V(s) of the soft-optimal solution for `reward` [S, V]."""
    q, value = soft_policy_iteration(transition, reward.double(), alpha, gamma)
    return q - value.unsqueeze(1)


def demonstrator_states(
    world: AutomatonWorld, demonstrator: TabularPolicy, threshold: float = 1e-3
) -> Tensor:
    """[S] bool: states whose mean per-step occupancy under the demonstrator (over the world's
    horizon) is at least `threshold`."""
    return occupancy(world, demonstrator, world.horizon).mean(dim=0) >= threshold


def _constant(values: np.ndarray, rtol: float = 1e-9) -> bool:
    """True when the spread is round-off: below rtol times the largest magnitude (or 1)."""
    return bool(np.ptp(values) <= rtol * max(1.0, float(np.abs(values).max())))


def _pearson(x: Tensor, y: Tensor, what: str) -> float:
    """Pearson correlation; nan with an `UndefinedMetricWarning` when it is undefined."""
    x_np, y_np = x.flatten().numpy(), y.flatten().numpy()
    why = None
    if len(x_np) < 2:
        why = f"{len(x_np)} token(s) in the set"
    elif _constant(x_np) or _constant(y_np):  # a constant (up to round-off) has no correlation
        why = f"the {'recovered' if _constant(x_np) else 'true'} advantages are constant there"
    if why is not None:
        warnings.warn(f"{what} is undefined (nan): {why}", UndefinedMetricWarning, stacklevel=3)
        return math.nan
    with warnings.catch_warnings():  # near-constant inputs: the value is still what we report
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        return float(stats.pearsonr(x_np, y_np).statistic)


def advantage_correlation(
    world: AutomatonWorld,
    reward: Tensor,
    demonstrator: TabularPolicy,
    alpha: float | None = None,
    gamma: float | None = None,
    threshold: float = 1e-3,
) -> dict[str, float]:
    """Pearson correlation of the recovered reward's soft advantages with the true ones.

    reward: [S, V] recovered reward. alpha / gamma: the temperature and discount to solve it at
    (default: the world's; pass the IRL method's own when its reward scale is tied to it).
    Returns {"irl/adv_corr_demo", "irl/adv_corr_off" (nan, with an `UndefinedMetricWarning`,
    when a set has < 2 tokens or constant advantages), "irl/n_demo_states", "irl/n_off_states"}."""
    spec = world.spec
    if tuple(reward.shape) != (world.n_states, world.vocab_size):
        raise ValueError(f"reward must be [{world.n_states}, {world.vocab_size}]")
    _check_finite(reward)
    alpha = spec.alpha if alpha is None else alpha
    gamma = spec.gamma if gamma is None else gamma
    recovered = soft_advantages(world.transition, reward, alpha, gamma)
    true = world.expert_q - world.expert_value.unsqueeze(1)
    on = demonstrator_states(world, demonstrator, threshold)
    return {
        "irl/adv_corr_demo": _pearson(recovered[on], true[on], "irl/adv_corr_demo"),
        "irl/adv_corr_off": _pearson(recovered[~on], true[~on], "irl/adv_corr_off"),
        "irl/n_demo_states": int(on.sum()),
        "irl/n_off_states": int((~on).sum()),
    }


def _check_finite(reward: Tensor) -> None:
    if not bool(reward.isfinite().all()):
        raise ValueError("the recovered reward must be finite (it holds inf or nan)")


def transfer_policy(
    world: AutomatonWorld, reward: Tensor, alpha: float | None = None, gamma: float | None = None
) -> TabularPolicy:
    """The soft-optimal policy for the recovered reward, from scratch (default: world's alpha,
    gamma)."""
    _check_finite(reward)
    alpha = world.spec.alpha if alpha is None else alpha
    gamma = world.spec.gamma if gamma is None else gamma
    q, _ = soft_policy_iteration(world.transition, reward.double(), alpha, gamma)
    return TabularPolicy.from_logits(q / alpha)


def reward_transfer(
    world: AutomatonWorld,
    reward: Tensor,
    alpha: float | None = None,
    gamma: float | None = None,
    horizon: int | None = None,
) -> float:
    """Exact true return J_horizon of `transfer_policy(world, reward, alpha, gamma)`."""
    return exact_return(world, transfer_policy(world, reward, alpha, gamma), horizon)


def recovered_reward_metrics(
    world: AutomatonWorld,
    reward: Tensor,
    demonstrator: TabularPolicy,
    alpha: float | None = None,
    gamma: float | None = None,
    threshold: float = 1e-3,
) -> dict[str, float]:
    """Advantage correlations (alpha / gamma as given) and reward transfer (the world's alpha /
    gamma), with the expert's and the uniform policy's returns for scale."""
    uniform = TabularPolicy.uniform(world.n_states, world.vocab_size)
    return {
        **advantage_correlation(world, reward, demonstrator, alpha, gamma, threshold),
        "irl/transfer_return": reward_transfer(world, reward),
        "irl/expert_return": exact_return(world, world.expert),
        "irl/uniform_return": exact_return(world, uniform),
    }
