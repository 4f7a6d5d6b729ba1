"""Maximum-entropy inverse RL (Ziebart et al. 2008), exact for tabular policies.

The reward is linear in one-hot (state, token) features, r_w(s, a) = w[s, a]. The learner for a
reward is its soft-optimal policy at temperature alpha (discounted soft Bellman equations):

    Q(s, a) = w[s, a] + gamma V(delta(s, a)),   V(s) = alpha log sum_a exp(Q(s, a) / alpha),
    pi_w(a | s) = exp((Q(s, a) - V(s)) / alpha).

MaxEnt IRL ascends the demonstrations' log-likelihood; its gradient in w is the difference of the
feature counts, the expected (state, token) visits per sequence over the demonstrations' horizon H:

    grad = mu_demo - mu_w - l2 * w,
    mu_demo[s, a] = (1/N) sum_n sum_{t<H} 1[s_t = s, a_t = a]   (from `dynamics.states`),
    mu_w[s, a]    = sum_{t<H} d_t(s) pi_w(a | s)                 (exact dynamic programming),

where d_t is the learner's state occupancy at step t from the demonstrations' own start states.
Counts are divided by H (per-step frequencies) so that learning rates do not depend on H. The
learner is stationary while the counts are finite-horizon, so the ascent is not exactly the
gradient of one likelihood; but any reward that makes pi_w equal the demonstrator (e.g. the
true reward, when the demonstrator is the soft-optimal expert with the same alpha / gamma) is a
fixed point, and the test checks that the counts are matched.

The soft-optimal policy is computed by `planning.soft_optimal_policy` (soft policy iteration:
exact policy evaluation by a linear solve, then pi <- softmax(Q / alpha)): Newton's method on the
soft Bellman equations. It reaches the fixed point of `soft_value_iteration` in a few steps
instead of hundreds, and warm-starts from the previous reward's solution. The adversarial and
IQ-Learn modules reuse the (state, token) counting helpers and `TableAdam` (Adam on one table
without `torch.optim`, whose first use imports torch._dynamo: seconds per process, more than a
whole tabular run).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from irlhf.algorithms.result import Trained
from irlhf.planning import soft_optimal_policy, state_transitions
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import TabularDynamics
from irlhf.types import Sequences
from irlhf.worlds.base import Demonstrations


class MaxEntIRLConfig(BaseModel):
    """MaxEnt IRL with a tabular reward (the `[maxent_irl]` table of an experiment config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    alpha: float = Field(0.1, gt=0.0)
    """Temperature of the soft-optimal learner (reward units). Only reward / alpha is identified;
    0.1 puts the recovered reward on the automaton worlds' default scale."""
    gamma: float = Field(0.95, ge=0.0, lt=1.0)
    """Discount of the learner's soft value iteration."""
    steps: int = Field(300, ge=0)
    """Gradient-ascent steps on the reward table."""
    lr: float = Field(0.05, gt=0.0)
    """Step size (reward units per step)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """"adam" (Adam, default betas) or "sgd" (plain gradient ascent)."""
    l2: float = Field(0.0, ge=0.0)
    """L2 penalty on the reward table (a Gaussian prior on w)."""


class TableAdam:
    """Adam (Kingma & Ba 2015) for one tensor, descending the gradients it is given."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m: Tensor | None = None
        self.v: Tensor | None = None
        self.t = 0

    def step(self, param: Tensor, grad: Tensor) -> Tensor:
        """The updated parameter (a new tensor)."""
        b1, b2 = self.betas
        self.t += 1
        self.m = (1 - b1) * grad if self.m is None else b1 * self.m + (1 - b1) * grad
        self.v = (1 - b2) * grad**2 if self.v is None else b2 * self.v + (1 - b2) * grad**2
        m_hat, v_hat = self.m / (1 - b1**self.t), self.v / (1 - b2**self.t)
        return param - self.lr * m_hat / (v_hat.sqrt() + self.eps)


# --- (state, token) counts ----------------------------------------------------------------------
def pair_counts(seqs: Sequences, dynamics: TabularDynamics) -> Tensor:
    """[S, V] float64: how often each (state, token) pair occurs among the completion tokens."""
    states = dynamics.states(seqs)[seqs.completion_mask]  # (N,)
    actions = seqs.tokens[seqs.completion_mask]
    counts = torch.zeros(dynamics.n_states * dynamics.vocab_size, dtype=torch.float64)
    counts.index_add_(0, states * dynamics.vocab_size + actions, torch.ones(len(states)).double())
    return counts.view(dynamics.n_states, dynamics.vocab_size)


def start_distribution(seqs: Sequences, dynamics: TabularDynamics) -> Tensor:
    """[S] float64: the empirical distribution of the sequences' start states."""
    starts = dynamics.states(seqs)[:, 0]
    return torch.bincount(starts, minlength=dynamics.n_states).double() / len(starts)


def feature_counts(
    policy: TabularPolicy, dynamics: TabularDynamics, start: Tensor, horizon: int
) -> Tensor:
    """[S, V] float64: sum_{t<horizon} d_t(s) pi(a|s), exact, from the start distribution.

    d_{t+1} = d_t P with the dense state-to-state matrix P of the policy, in numpy: MaxEnt IRL
    recomputes these counts at every step, and a dense [S] x [S, S] product costs a microsecond
    where a sparse one (`metrics.exposure.occupancy`) costs tens in call overhead."""
    step = state_transitions(dynamics.transition, policy.probs).numpy()  # (S, S)
    d = start.double().numpy()  # (S,) d_0
    visits = np.zeros_like(d)
    for _ in range(horizon):
        visits += d
        d = d @ step
    return torch.from_numpy(visits).unsqueeze(1) * policy.probs.double()


# --- MaxEnt IRL ---------------------------------------------------------------------------------
def maxent_irl(
    demonstrator_counts: Tensor,
    start: Tensor,
    dynamics: TabularDynamics,
    config: MaxEntIRLConfig = MaxEntIRLConfig(),
    horizon: int | None = None,
) -> Trained[TabularPolicy, Tensor]:
    """MaxEnt IRL from demonstrator feature counts [S, V] (expected visits per sequence over
    `horizon` steps, empirical or exact) and the start distribution [S].
    Returns the learner policy, one record per step and the recovered reward table [S, V]."""
    horizon = dynamics.horizon if horizon is None else horizon
    shape = (dynamics.n_states, dynamics.vocab_size)
    if tuple(demonstrator_counts.shape) != shape:
        raise ValueError(f"demonstrator_counts must be {list(shape)}")
    target = demonstrator_counts.double() / horizon  # per-step (state, token) frequencies
    reward = torch.zeros(shape, dtype=torch.float64)
    adam = TableAdam(config.lr)
    policy: TabularPolicy | None = None
    records: list[dict] = []
    for step in range(config.steps + 1):
        # Learner = soft-optimal policy for the current reward, warm-started from the last one.
        policy = soft_optimal_policy(dynamics, reward, config.alpha, config.gamma, policy)
        learner = feature_counts(policy, dynamics, start, horizon) / horizon
        gap = target - learner
        records.append(
            {
                "step": step,
                "maxent/count_tv": 0.5 * float(gap.abs().sum()),
                "maxent/demo_nll": -float((target * policy.probs.clamp_min(1e-300).log()).sum()),
                "maxent/reward_norm": float(reward.norm()),
            }
        )
        if step == config.steps:
            break
        ascent = gap - config.l2 * reward  # gradient of the (L2-penalised) log-likelihood
        reward = (
            adam.step(reward, -ascent)
            if config.optimizer == "adam"
            else reward + config.lr * ascent
        )
    assert policy is not None  # the loop runs at least once
    return Trained(policy, records, reward)


def train_maxent_irl(
    policy: TabularPolicy,
    demos: Demonstrations,
    dynamics: TabularDynamics,
    config: MaxEntIRLConfig = MaxEntIRLConfig(),
    generator: torch.Generator | None = None,
) -> Trained[TabularPolicy, Tensor]:
    """MaxEnt IRL on demonstrations. `policy` gives the table's shape only; `generator` is
    unused (everything is exact). Learned: the recovered reward [S, V]."""
    seqs = demos.sequences
    if tuple(policy.probs.shape) != (dynamics.n_states, dynamics.vocab_size):
        raise ValueError("policy table must be [n_states, vocab_size] of the dynamics")
    horizon = int(seqs.completion_mask.sum(dim=1).max())
    counts = pair_counts(seqs, dynamics) / demos.n
    return maxent_irl(counts, start_distribution(seqs, dynamics), dynamics, config, horizon)
