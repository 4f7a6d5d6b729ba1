"""Regret of any policy in an automaton world from its own roll-outs, by the
performance-difference lemma with the expert's exact values (Kakade & Langford 2002).

For the expert pi* (a table) and any policy pi (a table or a neural LM that sees tokens only),
with Q_h(s, a) = r(s, a) + V_{h-1}(s') and V_h(s) = sum_a pi*(a | s) Q_h(s, a) the expert's
undiscounted values with h steps to go (V_0 = 0; the transitions are deterministic),

    J_L(pi*) - J_L(pi) = E_{tau ~ pi} sum_{t < L} [V_{L-t}(s_t) - sum_a pi(a|h_t) Q_{L-t}(s_t, a)],

h_t the prefix (what pi sees) and s_t its latent state. The inner sum over actions is exact
(pi's full next-token distribution at the sampled prefix), so only the visited states are
random: the estimator is unbiased like the plain Monte-Carlo return difference but without the
noise of the sampled actions and rewards, and J_L(pi*) is exact. One set of roll-outs of the
longest horizon gives every L at once (the expert's values depend on the steps to go, L - t).
"""

from __future__ import annotations

import torch
from torch import Tensor

from irlhf.types import Sequences
from irlhf.worlds.automaton import AutomatonWorld


def expert_values(world: AutomatonWorld, horizon: int) -> tuple[Tensor, Tensor]:
    """(V [horizon + 1, S], Q [horizon + 1, S, V]): the expert's values with h = 0..horizon
    steps to go (float64; V_0 = Q_0 = 0)."""
    S, A = world.reward_table.shape
    expert = world.expert.probs.double()
    reward = world.reward_table.double()
    V = torch.zeros(horizon + 1, S, dtype=torch.float64)
    Q = torch.zeros(horizon + 1, S, A, dtype=torch.float64)
    for h in range(1, horizon + 1):
        Q[h] = reward + V[h - 1][world.transition]
        V[h] = (expert * Q[h]).sum(dim=1)
    return V, Q


def pdl_regret(
    world: AutomatonWorld, seqs: Sequences, probs: Tensor, values: tuple[Tensor, Tensor]
) -> Tensor:
    """[B, H]: per roll-out, the performance-difference sum for every L = 1..H (column L - 1),
    whose mean over roll-outs of pi is J_L(pi*) - J_L(pi).

    seqs: B roll-outs of pi (prompt of one token, H completion tokens); probs [B, H, V]: pi's
    next-token distribution at each completion position; values: `expert_values(world, >= H)`."""
    V, Q = values
    states = world.states(seqs)[:, 1:]  # (B, H): the state each completion token is chosen in
    B, H = states.shape
    if probs.shape[:2] != (B, H):
        raise ValueError(
            f"probs must be [{B}, {H}, V] for these roll-outs, got {tuple(probs.shape)}"
        )
    if V.shape[0] <= H:
        raise ValueError(f"expert values for {V.shape[0] - 1} steps; the roll-outs have {H}")
    probs = probs.double()
    out = torch.zeros(B, H, dtype=torch.float64)
    for h in range(1, H + 1):
        # the step at position t with h steps to go counts toward L = t + h (t < H - h + 1)
        s = states[:, : H - h + 1]
        advantage = V[h][s] - (probs[:, : H - h + 1] * Q[h][s]).sum(dim=-1)
        out[:, h - 1 :] += advantage
    return out
