"""IQ-Learn (inverse soft-Q learning; Garg et al. 2021) for tabular policies.

One table is both the policy and the reward: the policy's logits are a soft Q-function,

    V(s) = alpha log sum_a exp(Q(s, a) / alpha),   pi(a | s) = exp((Q(s, a) - V(s)) / alpha),

and the reward it implies is the inverse soft Bellman operator, r(s, a) = Q(s, a) - gamma V(s')
with s' = delta(s, a). IQ-Learn maximises over Q, for the chi^2 divergence,

    J(Q) = E_demo[r - r^2 / (4 chi2_alpha)] - E_rho[V(s) - gamma V(s')],

(`losses.iq_learn`, whose docstring gives the equations) by gradient descent on -J. The value term
is taken over the demonstrator's transitions only ("offline", the official `value_expert` loss:
no rollouts at all), or over a 50/50 pool of demonstrator and learner transitions ("online", the
official `value` loss), the learner's coming from rollouts of the current policy every round
(kept in a replay buffer). This is the LM form of Wulfmeier et al. 2024 with a table for logits.

Tabular specifics: a transition (s, a, s') is determined by (s, a), so a batch of transitions is
a table of (state, token) counts, and the loss is evaluated on the [S, V] tables with those counts
as weights (exactly the mean over the individual transitions). The automaton has no terminal
states: the end of a demonstration is a truncation, so V(s') is kept at the last token too.
Offline without the chi^2 term the loss reduces to -E_demo[Q(s, a) - V(s)] = -alpha E_demo[log
pi(a | s)]: behaviour cloning; the chi^2 term is what ties Q to a small, Bellman-consistent
reward.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from irlhf import losses
from irlhf.algorithms.maxent_irl import TableAdam, pair_counts
from irlhf.algorithms.result import Trained
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import TabularDynamics
from irlhf.worlds.base import Demonstrations


class IQObjectiveConfig(Protocol):
    """What `iq_objective` reads of a tabular or neural IQ-Learn config."""

    @property
    def gamma(self) -> float: ...
    @property
    def divergence(self) -> Literal["chi2", "none"]: ...
    @property
    def chi2_alpha(self) -> float: ...


class IQLearnConfig(BaseModel):
    """Tabular IQ-Learn (the `[iq_learn]` table of an experiment config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    online: bool = False
    """False: demonstrator transitions only; True: also the learner's rollouts each round."""
    alpha: float = Field(0.1, gt=0.0)
    """Soft temperature: pi = softmax(Q / alpha) (reward units per nat)."""
    gamma: float = Field(0.95, ge=0.0, lt=1.0)
    """Discount of the inverse soft Bellman operator r = Q - gamma V(s')."""
    divergence: Literal["chi2", "none"] = "chi2"
    """"chi2" (the regulariser phi(r) = r - r^2 / (4 chi2_alpha)) or "none" (phi(r) = r)."""
    chi2_alpha: float = Field(0.5, gt=0.0)
    """Strength of the chi^2 regulariser (official default 0.5; smaller = smaller rewards)."""
    rounds: int = Field(10, ge=1)
    """Rounds; online, each starts with fresh learner rollouts."""
    steps_per_round: int = Field(50, ge=1)
    """Adam steps on the Q table per round (full batch)."""
    lr: float = Field(0.05, gt=0.0)
    """Adam learning rate (reward units per step)."""
    rollouts_per_round: int = Field(50, ge=1)
    """Online: learner sequences added to the replay buffer per round."""


def soft_value(q: Tensor, alpha: float) -> Tensor:
    """[S] V(s) = alpha logsumexp(Q(s, .) / alpha)."""
    return alpha * torch.logsumexp(q / alpha, dim=1)


def implied_reward(q: Tensor, transition: Tensor, alpha: float, gamma: float) -> Tensor:
    """[S, V] r(s, a) = Q(s, a) - gamma V(delta(s, a)), the inverse soft Bellman operator."""
    return q - gamma * soft_value(q, alpha)[transition]


def iq_objective(
    q: Tensor,
    v: Tensor,
    v_next: Tensor,
    expert_weights: Tensor,
    learner: tuple[Tensor, Tensor, Tensor] | None,
    config: IQObjectiveConfig,
) -> tuple[Tensor, dict]:
    """`losses.iq_learn` at the config's gamma, divergence and chi2_alpha, the one call of the
    tabular and the neural IQ-Learn: Q(s, a), V(s), V(s') and the weights of the demonstrator's
    transitions and, online, the learner's (V(s), V(s'), weights), pooled into the value term."""
    v_policy, v_next_policy, mask_policy = (None, None, None) if learner is None else learner
    return losses.iq_learn(
        q,
        v,
        v_next,
        v_policy,
        v_next_policy,
        gamma=config.gamma,
        mask_expert=expert_weights,
        mask_policy=mask_policy,
        divergence=config.divergence,
        alpha=config.chi2_alpha,
    )


def iq_loss(
    q: Tensor,
    transition: Tensor,
    demo_counts: Tensor,
    learner_counts: Tensor | None,
    config: IQLearnConfig,
) -> tuple[Tensor, dict]:
    """`losses.iq_learn` on the [S, V] tables, weighted by transition counts. Learner counts,
    when given, are rescaled to the demonstrations' total (an even pool, as the official
    equal-size expert and policy batches)."""
    value = soft_value(q, config.alpha)  # (S,)
    v_here = value.unsqueeze(1).expand_as(q)  # (S, V): V(s) for every (s, a)
    v_next = value[transition]  # (S, V): V(delta(s, a))
    learner_terms = None
    if learner_counts is not None:
        scale = demo_counts.sum() / learner_counts.sum()
        learner_terms = (v_here, v_next, learner_counts * scale)
    return iq_objective(q, v_here, v_next, demo_counts, learner_terms, config)


def train_iq_learn(
    policy: TabularPolicy,
    demos: Demonstrations,
    dynamics: TabularDynamics,
    config: IQLearnConfig = IQLearnConfig(),
    generator: torch.Generator | None = None,
) -> Trained[TabularPolicy, Tensor]:
    """IQ-Learn from `policy` (Q starts at alpha log pi). Returns policy = softmax(Q / alpha),
    one record per round and the recovered reward Q - gamma V(s') [S, V]."""
    generator = generator or torch.Generator().manual_seed(0)
    demo_counts = pair_counts(demos.sequences, dynamics)  # (S, V) demonstrator transitions
    q = config.alpha * policy.probs.clamp_min(1e-300).log()
    adam = TableAdam(config.lr)
    learner_counts: Tensor | None = None
    records = []
    for round_ in range(1, config.rounds + 1):
        if config.online:
            current = TabularPolicy.from_logits(q / config.alpha)
            rollouts = dynamics.rollout(current, config.rollouts_per_round, generator)
            fresh = pair_counts(rollouts, dynamics)
            learner_counts = fresh if learner_counts is None else learner_counts + fresh
        for _ in range(config.steps_per_round):
            q.requires_grad_(True)
            loss, metrics = iq_loss(q, dynamics.transition, demo_counts, learner_counts, config)
            (grad,) = torch.autograd.grad(loss, q)
            q = adam.step(q.detach(), grad)
        records.append({"round": round_, **metrics})
    policy = TabularPolicy.from_logits(q / config.alpha)
    reward = implied_reward(q, dynamics.transition, config.alpha, config.gamma)
    return Trained(policy, records, reward)
