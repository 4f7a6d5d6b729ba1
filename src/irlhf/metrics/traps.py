"""Trap-entry and trap-exit rates of a tabular policy, and the two-state model they imply.

Issue 14, item 6. In an automaton world (`AutomatonWorld`, `FlipFlopWorld`) the states split into
good and trap states (`trap_set`: `world.is_trap`; in the flip-flop world that is `mode > 0`).
From the policy's own occupancy d_t(s) over steps t = 0..T-1 (`irlhf.metrics.exposure.occupancy`,
exact DP), with g(s) = P(next state is a trap | s) under the policy:

    p   = sum_t sum_{s good} d_t(s) g(s)       / sum_t sum_{s good} d_t(s)     (trap entry)
    q   = sum_t sum_{s trap} d_t(s) (1 - g(s)) / sum_t sum_{s trap} d_t(s)     (trap exit)
    c   = rbar_expert - rbar_trap    (per-step reward lost in a trap, vs the expert)
    eps = rbar_expert - rbar_good    (per-step reward shortfall in good states, vs the expert)

where rbar_expert is the expert's expected per-step reward averaged over the T steps and
rbar_good / rbar_trap the policy's expected reward per step averaged over its own good / trap
occupancy. All in float64, exact.

The two-state model: a Markov chain on {good, trap} with entry probability p and exit
probability q per step, started in the trap with probability P_0 (the start distribution's trap
mass; 0 in every preset). Its trap occupancy at step t is

    P_t = pi + (P_0 - pi) (1 - p - q)^t,   pi = p / (p + q)     (P_0 = 0: pi (1 - (1-p-q)^t))

and its regret curve R(L) = sum_{t<L} [c P_t + eps (1 - P_t)]. Assumptions: the rates, the costs
and the expert's per-step reward are the same at every step and in every good (trap) state, i.e.
the occupancy within each set does not matter (the chain is lumpable) and is stationary. They
fail, e.g., when exits are possible only from some trap states (the flip-flop's depth
`min_stay`: a fresh trap is stickier than an old one), or when the policy's entry rate drifts as
it wanders into good states the demonstrations never covered. Then the model's power-law
exponent (`irlhf.metrics.exposure.fit_power_law` of R(L)) can miss the measured one; comparing
the two says whether the rates alone explain the compounding.

`trap_rates_mc` estimates the same quantities for a policy that sees tokens only (a neural
LM) from its own roll-outs.

A rate of a set the policy never occupies (p with no good-state occupancy, q, c with no trap
occupancy) is undefined: `trap_rates` raises `UndefinedMetric` (never nan).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from irlhf.metrics.exposure import float64_table, occupancy
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies.tabular import TabularPolicy
from irlhf.types import Sequences
from irlhf.worlds.automaton import AutomatonWorld


@dataclass(frozen=True)
class TrapRates:
    """Per-step rates and costs of one policy over `horizon` steps (module docstring)."""

    entry_rate: float
    """p: P(good -> trap in one step), averaged over the policy's good-state occupancy."""
    exit_rate: float
    """q: P(trap -> good in one step), averaged over the policy's trap-state occupancy."""
    trap_cost: float
    """c: the expert's mean per-step reward minus the policy's in trap states (reward units)."""
    good_shortfall: float
    """eps: the expert's mean per-step reward minus the policy's in good states (reward units;
    may be negative)."""
    start_trap: float
    """P_0: the start distribution's trap mass."""
    first_step_entry_rate: float
    """p at step 0 alone (good-state start mass moving into a trap; a diagnostic of the
    constant-rate assumption: the flip-flop's start contexts include the entry tokens, good
    states the expert reaches only at step 0, so its learners enter far more often there).
    0 when the start has no good mass."""
    horizon: int

    def trap_occupancy(self, horizon: int | None = None) -> np.ndarray:
        """[horizon] P_t of the two-state model."""
        return two_state_occupancy(
            self.entry_rate,
            self.exit_rate,
            self.horizon if horizon is None else horizon,
            self.start_trap,
        )

    def regret(self, horizon: int | None = None) -> np.ndarray:
        """[horizon] the model's cumulative regret R(L), L = 1..horizon."""
        P = self.trap_occupancy(horizon)
        return np.cumsum(self.trap_cost * P + self.good_shortfall * (1.0 - P))


def trap_set(world: AutomatonWorld) -> Tensor:
    """[S] bool: the trap states (`world.is_trap`; in a `FlipFlopWorld`, `mode > 0`)."""
    return world.is_trap.bool()


def two_state_occupancy(p: float, q: float, horizon: int, start: float = 0.0) -> np.ndarray:
    """[horizon] float64 P_t = pi + (P_0 - pi)(1 - p - q)^t, pi = p / (p + q), t = 0..horizon-1:
    the trap occupancy of the two-state chain (p = q = 0: P_t = P_0)."""
    for name, rate in (("p", p), ("q", q), ("start", start)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1] (got {rate})")
    t = np.arange(horizon, dtype=np.float64)
    if p + q == 0.0:
        return np.full(horizon, float(start))
    pi = p / (p + q)
    return pi + (start - pi) * (1.0 - p - q) ** t


def _set_mean(d: Tensor, values: Tensor, members: Tensor, what: str) -> float:
    """sum_t sum_{s in set} d_t(s) values(s) / sum_t sum_{s in set} d_t(s)."""
    mass = d[:, members].sum()
    if float(mass) <= 0.0:
        raise UndefinedMetric(f"{what} is undefined: the policy never occupies that set")
    return float((d[:, members] * values[members]).sum() / mass)


def trap_rates(
    world: AutomatonWorld, policy: TabularPolicy, horizon: int | None = None
) -> TrapRates:
    """Exact p, q, c and eps of `policy` over `horizon` steps (module docstring). Raises
    `UndefinedMetric` when the policy never occupies the good set (p, eps) or the trap set
    (q, c)."""
    horizon = world.horizon if horizon is None else horizon
    trap = trap_set(world)
    table = float64_table(policy)
    into_trap = (table * trap[world.transition].double()).sum(dim=1)  # [S] g(s)
    reward = (table * world.reward_table).sum(dim=1)
    d = occupancy(world, policy, horizon)
    expert_d = occupancy(world, world.expert, horizon)
    expert_reward = float((expert_d @ _step_reward(world, world.expert)).mean())
    good = ~trap
    return TrapRates(
        entry_rate=_set_mean(d, into_trap, good, "the trap-entry rate p"),
        exit_rate=_set_mean(d, 1.0 - into_trap, trap, "the trap-exit rate q"),
        trap_cost=expert_reward - _set_mean(d, reward, trap, "the trap cost c"),
        good_shortfall=expert_reward - _set_mean(d, reward, good, "the good-state shortfall"),
        start_trap=float(world.start[trap].sum()),
        first_step_entry_rate=_set_mean(d[:1], into_trap, good, "p at step 0")
        if float(d[0, good].sum()) > 0
        else 0.0,
        horizon=horizon,
    )


def trap_rates_mc(world: AutomatonWorld, seqs: Sequences, probs: Tensor) -> TrapRates:
    """p, q, c and eps of a policy that sees tokens only (a neural LM), from its own roll-outs:
    the same averages as `trap_rates` with the exact occupancy replaced by the visited states
    of `seqs` (B roll-outs, one prompt token, H completion tokens) and g(s), the expected reward,
    by the policy's exact next-token distribution at each visited prefix (`probs` [B, H, V]).
    Raises `UndefinedMetric` when no roll-out visits the good set or the trap set."""
    states = world.states(seqs)[:, 1:]  # (B, H)
    H = states.shape[1]
    probs = probs.double()
    trap = trap_set(world)
    into_trap = (probs * trap[world.transition[states]].double()).sum(dim=-1)  # (B, H)
    reward = (probs * world.reward_table[states]).sum(dim=-1)
    in_trap = trap[states]
    expert_d = occupancy(world, world.expert, H)
    expert_reward = float((expert_d @ _step_reward(world, world.expert)).mean())

    def mean(values: Tensor, where: Tensor, what: str) -> float:
        if not bool(where.any()):
            raise UndefinedMetric(f"{what} is undefined: no roll-out visits that set")
        return float(values[where].mean())

    first = ~in_trap[:, 0]
    return TrapRates(
        entry_rate=mean(into_trap, ~in_trap, "the trap-entry rate p"),
        exit_rate=mean(1.0 - into_trap, in_trap, "the trap-exit rate q"),
        trap_cost=expert_reward - mean(reward, in_trap, "the trap cost c"),
        good_shortfall=expert_reward - mean(reward, ~in_trap, "the good-state shortfall"),
        start_trap=float(world.start[trap].sum()),
        first_step_entry_rate=mean(into_trap[:, 0], first, "p at step 0") if first.any() else 0.0,
        horizon=H,
    )


def _step_reward(world: AutomatonWorld, policy: TabularPolicy) -> Tensor:
    return (float64_table(policy) * world.reward_table).sum(dim=1)


def measured_trap_occupancy(
    world: AutomatonWorld, policy: TabularPolicy, horizon: int | None = None
) -> np.ndarray:
    """[horizon] the exact P(state at step t is a trap) under the policy."""
    horizon = world.horizon if horizon is None else horizon
    return occupancy(world, policy, horizon)[:, trap_set(world)].sum(dim=1).numpy()


def measured_regret(
    world: AutomatonWorld, policy: TabularPolicy, horizon: int | None = None
) -> np.ndarray:
    """[horizon] the exact cumulative regret J_L(expert) - J_L(policy), L = 1..horizon (the
    `regret` of `irlhf.metrics.exposure.exposure_bias`, without its KL terms)."""
    horizon = world.horizon if horizon is None else horizon
    steps = occupancy(world, world.expert, horizon) @ _step_reward(world, world.expert)
    steps = steps - occupancy(world, policy, horizon) @ _step_reward(world, policy)
    return torch.cumsum(steps, dim=0).numpy()


__all__ = [
    "TrapRates",
    "measured_regret",
    "measured_trap_occupancy",
    "trap_rates",
    "trap_rates_mc",
    "trap_set",
    "two_state_occupancy",
]
