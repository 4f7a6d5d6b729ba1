"""IQ-Learn (inverse soft-Q learning; Garg et al. 2021) for neural token-sequence policies, in the
LM form of Wulfmeier et al. 2024 ("Imitating Language via Scalable Inverse Reinforcement
Learning"): the causal LM's logits are a soft Q-function,

    Q(s_t, a) = alpha logits_t[a],   V(s_t) = alpha logsumexp_a logits_t[a],
    pi(a | s_t) = exp((Q(s_t, a) - V(s_t)) / alpha) = softmax(logits_t)[a],

with s_t = tokens_<t, so the policy is the network unchanged (sampled at temperature 1), and its
implied reward is the inverse soft Bellman operator r(s_t, a_t) = Q(s_t, a_t) - gamma V(s_{t+1}).
The loss is `losses.iq_learn` (its docstring gives the equations) on minibatches of
demonstrator sequences; the value term E[V(s) - gamma V(s')] is over demonstrator transitions
only ("offline", no rollouts) or over a pool of demonstrator and learner transitions ("online":
each round samples the current policy into a replay buffer, and every step pairs a demonstrator
minibatch with an equal learner one, as the official implementation).

As the tabular `iq_learn`: the automaton's episodes end by truncation at the horizon, so V of
the final prefix is kept (no terminal states). Offline without the chi^2 term the loss is
-alpha E_demo[log pi(a | s)], behaviour cloning; the chi^2 term ties Q to a small,
Bellman-consistent reward. alpha only rescales Q against the chi^2 term (pi does not depend on it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from irlhf.algorithms.iq_learn import iq_objective
from irlhf.algorithms.optim import adamw
from irlhf.algorithms.result import Trained
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.protocols import Dynamics
from irlhf.types import Sequences
from irlhf.worlds.base import Demonstrations


class NeuralIQLearnConfig(BaseModel):
    """Neural IQ-Learn (the `[neural_iq_learn]` table of an experiment config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    online: bool = False
    """False: demonstrator transitions only; True: also the learner's rollouts each round."""
    alpha: float = Field(0.1, gt=0.0)
    """Soft temperature: Q = alpha * logits (reward units per nat). The policy does not depend
    on it, but the chi^2 term's weight against the rest grows with it (measured, spread world,
    horizon 16, 300 steps from a BC start at J 11.8: alpha 0.1 gave 12.3, alpha 1 gave 4.8)."""
    gamma: float = Field(0.95, ge=0.0, le=1.0)
    """Discount of the inverse soft Bellman operator r = Q - gamma V(s')."""
    divergence: Literal["chi2", "none"] = "chi2"
    """"chi2" (the regulariser phi(r) = r - r^2 / (4 chi2_alpha)) or "none" (phi(r) = r)."""
    chi2_alpha: float = Field(0.5, gt=0.0)
    """Strength of the chi^2 regulariser (official default 0.5; smaller = smaller rewards)."""
    rounds: int = Field(10, ge=1)
    """Rounds; online, each starts with fresh learner rollouts."""
    steps_per_round: int = Field(30, ge=1)
    """AdamW steps per round."""
    batch_size: int = Field(32, ge=1)
    """Demonstrator sequences per step (online: plus as many learner sequences)."""
    lr: float = Field(3e-3, gt=0.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Global gradient-norm clip."""
    rollouts_per_round: int = Field(32, ge=1)
    """Online: learner sequences added to the replay buffer per round."""


def soft_q_and_values(
    policy: CausalLMPolicy, seqs: Sequences, alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Q(s_t, a_t), V(s_t) and V(s_{t+1}), each (B, C) over the C completion tokens (the prompt is
    left-aligned and of equal length), differentiable in the policy's parameters."""
    P, T, A = seqs.prompt_length, seqs.length, policy.action_vocab_size
    seqs = seqs.to(policy.device)
    # positions P-1 .. T-1: logits at the prefixes s_0 .. s_C (s_C: after the last token)
    logits, _ = policy.action_logits(seqs, start=P - 1, end=T)  # (B, C + 1, A)
    values = alpha * torch.logsumexp(logits, dim=-1)  # (B, C + 1)
    targets = seqs.tokens[:, P:].clamp(max=A - 1).unsqueeze(-1)  # (B, C, 1)
    q = alpha * logits[:, :-1].gather(-1, targets).squeeze(-1)  # (B, C)
    return q, values[:, :-1], values[:, 1:]


def implied_rewards(policy: CausalLMPolicy, seqs: Sequences, alpha: float, gamma: float) -> Tensor:
    """(B, T) the recovered reward r(s_t, a_t) = Q(s_t, a_t) - gamma V(s_{t+1}) at each completion
    token (aligned with `seqs.tokens`, 0 elsewhere)."""
    with torch.inference_mode():
        q, _, v_next = soft_q_and_values(policy, seqs, alpha)
    reward = F.pad(q - gamma * v_next, (seqs.prompt_length, 0))
    return reward * seqs.completion_mask.to(reward.device)


def iq_loss(
    policy: CausalLMPolicy,
    expert: Sequences,
    learner: Sequences | None,
    config: NeuralIQLearnConfig,
) -> tuple[Tensor, dict]:
    """`losses.iq_learn` (through the tabular module's `iq_objective`) on a demonstrator
    minibatch (and a learner one, online)."""
    q, v, v_next = soft_q_and_values(policy, expert, config.alpha)
    learner_terms = None
    if learner is not None:
        _, v_learner, v_next_learner = soft_q_and_values(policy, learner, config.alpha)
        mask = learner.completion_mask[:, learner.prompt_length :].to(q.device)
        learner_terms = (v_learner, v_next_learner, mask)
    expert_mask = expert.completion_mask[:, expert.prompt_length :].to(q.device)
    return iq_objective(q, v, v_next, expert_mask, learner_terms, config)


def train_neural_iq_learn(
    policy: CausalLMPolicy,
    demos: Demonstrations,
    dynamics: Dynamics,
    config: NeuralIQLearnConfig = NeuralIQLearnConfig(),
    generator: torch.Generator | None = None,
) -> Trained[CausalLMPolicy, Callable[[Sequences], Tensor]]:
    """IQ-Learn from `policy` (trained in place; Q starts at alpha * its logits). Returns
    policy = softmax(Q / alpha), one record per round and the recovered reward: `implied_rewards`
    of the trained policy (seqs -> [B, T] per completion token)."""
    generator = generator or torch.Generator().manual_seed(0)
    expert = demos.sequences
    horizon = expert.length - expert.prompt_length
    optimizer = adamw(policy.parameters(), config.lr, config.weight_decay, fused=False)
    buffer: Sequences | None = None  # the learner's rollouts so far (online)
    records = []
    for round_ in range(1, config.rounds + 1):
        if config.online:
            prompts = dynamics.sample_prompts(config.rollouts_per_round, generator)
            fresh = policy.sample(prompts, horizon, generator).to("cpu")
            buffer = fresh if buffer is None else Sequences.concat([buffer, fresh])
        policy.train()
        for _ in range(config.steps_per_round):
            rows = torch.randint(expert.batch_size, (config.batch_size,), generator=generator)
            learner = None
            if buffer is not None:
                picks = torch.randint(buffer.batch_size, (config.batch_size,), generator=generator)
                learner = buffer[picks]
            loss, metrics = iq_loss(policy, expert[rows], learner, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(list(policy.parameters()), config.max_grad_norm)
            optimizer.step()
        policy.eval()
        records.append({"round": round_, **metrics})
    reward = partial(implied_rewards, policy, alpha=config.alpha, gamma=config.gamma)
    return Trained(policy, records, reward)
