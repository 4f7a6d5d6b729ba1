"""Adversarial imitation for tabular policies: GAIL (Ho & Ermon 2016) and AIRL (Fu et al. 2018).

Both alternate a discriminator D(s, a) = sigmoid(logit(s, a)) = P(demonstrator | s, a), trained by
binary cross-entropy on the demonstrator's (state, token) pairs against the learner's own rollouts
(`losses.gail_discriminator`), with a policy step against a reward built from the discriminator.
Only the discriminator differs:

  GAIL   logit(s, a) = D_table[s, a];  policy reward -log(1 - D) = softplus(logit) ("softplus")
         or log D - log(1 - D) = logit ("logit"). GAIL recovers no reward of its own (at its
         equilibrium D = 1/2 says nothing); what the learner has optimised is the sum of the
         rounds' rewards (with anchor = previous, pi_K ∝ pi_0 exp(sum_k Q_k / kl_coef) -- exactly
         so in a one-step problem), which is therefore returned as its recovered reward (the
         last round's reward with anchor = uniform).
  AIRL   f(s, a) = g(s, a) + gamma h(delta(s, a)) - h(s)   (reward approximator g, potential h),
         logit(s, a) = f(s, a) - log pi(a | s)              (`losses.airl_logits`),
         policy reward f - log pi; the recovered reward is g.

The policy step is the RLHF step, `planning.kl_regularised_policy` (exact, tabular):

    pi_new = argmax_pi  E_pi[sum_t gamma^t r(s_t, a_t)] - kl_coef KL(pi || anchor),
    pi_new(a | s) ∝ anchor(a | s) exp(Q(s, a) / kl_coef),

with the anchor the previous policy (a mirror-descent / trust-region step) or the uniform policy
(GAIL's causal-entropy bonus, weight kl_coef). For AIRL with anchor = previous and kl_coef = 1 the
step is exactly soft-optimal for f at temperature 1, since r = f - log pi_prev and
E[f - log pi_prev] - KL(pi || pi_prev) = E[f] + H(pi): AIRL's entropy-regularised objective.

Training sees the demonstrations, the dynamics and the learner's own rollouts; no true reward.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from irlhf import losses
from irlhf.algorithms.maxent_irl import TableAdam, pair_counts
from irlhf.algorithms.result import Trained
from irlhf.planning import kl_regularised_policy
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import TabularDynamics
from irlhf.worlds.base import Demonstrations


class AdversarialIRLConfig(BaseModel):
    """The adversarial loop shared by GAIL and AIRL (the `[airl]` table of a config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    rounds: int = Field(30, ge=0)
    """Rounds of (learner rollouts, discriminator update, policy step)."""
    rollouts_per_round: int = Field(50, ge=1)
    """Learner sequences sampled per round (the discriminator's negatives)."""
    disc_steps: int = Field(20, ge=1)
    """Adam steps on the discriminator per round (full batch of (state, token) counts)."""
    disc_lr: float = Field(0.1, gt=0.0)
    """Discriminator Adam learning rate (logit units per step)."""
    disc_l2: float = Field(0.0, ge=0.0)
    """L2 penalty on the discriminator's tables (keeps logits of one-sided pairs finite)."""
    kl_coef: float = Field(1.0, gt=0.0)
    """Temperature of the policy step: weight of KL(pi || anchor) (reward units per nat)."""
    anchor: Literal["previous", "uniform"] = "previous"
    """KL to the previous policy (trust region) or to uniform (entropy bonus)."""
    gamma: float = Field(0.95, ge=0.0, lt=1.0)
    """Discount of the policy step's soft value iteration (and of AIRL's shaping term)."""


class GAILConfig(AdversarialIRLConfig):
    """GAIL (the `[gail]` table of a config)."""

    reward: Literal["softplus", "logit"] = "softplus"
    """Policy reward: -log(1 - D) = softplus(logit), or log D - log(1 - D) = logit."""


class Discriminator(Protocol):
    """A tabular discriminator: its parameters, logits and rewards over every (state, token)."""

    params: list[Tensor]

    def logits(self, log_pi: Tensor) -> Tensor:
        """[S, V] logit of D, differentiable in `params`; log_pi is the current policy's."""
        ...

    def policy_reward(self, log_pi: Tensor) -> Tensor:
        """[S, V] the reward the policy step maximises."""
        ...

    def recovered_reward(self) -> Tensor:
        """[S, V] the discriminator's own reward (GAIL: the policy reward; AIRL: g)."""
        ...


class GAILDiscriminator:
    """logit(s, a) = table[s, a]."""

    def __init__(self, n_states: int, vocab_size: int, reward: str = "softplus") -> None:
        self.params = [torch.zeros(n_states, vocab_size, dtype=torch.float64)]
        self.reward = reward

    def logits(self, log_pi: Tensor) -> Tensor:
        return self.params[0]

    def policy_reward(self, log_pi: Tensor) -> Tensor:
        table = self.params[0].detach()
        return F.softplus(table) if self.reward == "softplus" else table

    def recovered_reward(self) -> Tensor:
        return self.policy_reward(torch.zeros_like(self.params[0]))


class AIRLDiscriminator:
    """logit = f - log pi with f(s, a) = g(s, a) + gamma h(delta(s, a)) - h(s)."""

    def __init__(self, transition: Tensor, vocab_size: int, gamma: float) -> None:
        n_states = transition.shape[0]
        g = torch.zeros(n_states, vocab_size, dtype=torch.float64)
        self.params = [g, torch.zeros(n_states, dtype=torch.float64)]
        self.transition, self.gamma = transition, gamma

    def f(self) -> Tensor:
        g, h = self.params
        return g + self.gamma * h[self.transition] - h.unsqueeze(1)  # (S, V)

    def logits(self, log_pi: Tensor) -> Tensor:
        logits, _ = losses.airl_logits(self.f(), log_pi.detach())
        return logits

    def policy_reward(self, log_pi: Tensor) -> Tensor:
        return self.logits(log_pi).detach()

    def recovered_reward(self) -> Tensor:
        return self.params[0].detach()


def adversarial_irl(
    policy: TabularPolicy,
    demos: Demonstrations,
    dynamics: TabularDynamics,
    discriminator: Discriminator,
    config: AdversarialIRLConfig,
    generator: torch.Generator,
) -> Trained[TabularPolicy, Tensor]:
    """The loop GAIL and AIRL share: rollouts -> discriminator -> reward -> policy step.
    Returns the policy, one record per round and the sum of the rounds' policy rewards [S, V]."""
    demo_counts = pair_counts(demos.sequences, dynamics)  # (S, V) demonstrator pairs
    optimizers = [TableAdam(config.disc_lr) for _ in discriminator.params]
    uniform = TabularPolicy.uniform(dynamics.n_states, dynamics.vocab_size)
    summed_reward = torch.zeros(dynamics.n_states, dynamics.vocab_size, dtype=torch.float64)
    records = []
    for round_ in range(1, config.rounds + 1):
        # 1. The learner's own (state, token) pairs.
        rollouts = dynamics.rollout(policy, config.rollouts_per_round, generator)
        learner_counts = pair_counts(rollouts, dynamics)
        log_pi = policy.probs.clamp_min(1e-300).log()
        # 2. Discriminator: demonstrator pairs = 1, learner pairs = 0 (counts weight each pair).
        for _ in range(config.disc_steps):
            params = [p.requires_grad_(True) for p in discriminator.params]
            logits = discriminator.logits(log_pi)
            loss, metrics = losses.gail_discriminator(
                logits, logits, expert_mask=demo_counts, policy_mask=learner_counts
            )
            penalty, _ = losses.l2_penalty(params, config.disc_l2)
            grads = torch.autograd.grad(loss + penalty, params)
            discriminator.params = [
                opt.step(p.detach(), g) for opt, p, g in zip(optimizers, params, grads, strict=True)
            ]
        # 3. Policy step against the discriminator's reward.
        reward = discriminator.policy_reward(log_pi)
        summed_reward += reward
        anchor = policy if config.anchor == "previous" else uniform
        previous = policy
        policy = kl_regularised_policy(dynamics, reward, anchor, config.kl_coef, config.gamma)
        records.append(
            {
                "round": round_,
                **metrics,
                "disc/accuracy": 0.5 * (metrics["disc/expert_acc"] + metrics["disc/policy_acc"]),
                "adv/reward_expert": _weighted_mean(reward, demo_counts),
                "adv/reward_learner": _weighted_mean(reward, learner_counts),
                "adv/learner_entropy": _weighted_mean(-log_pi, learner_counts),
                "adv/kl_to_previous": _mean_kl(previous, policy, learner_counts),
            }
        )
    return Trained(policy, records, summed_reward)


def _weighted_mean(table: Tensor, counts: Tensor) -> float:
    total = float(counts.sum())
    return float((table * counts).sum()) / total if total > 0 else math.nan


def _mean_kl(old: TabularPolicy, new: TabularPolicy, counts: Tensor) -> float:
    """KL(old || new) averaged over the states of the (state, token) counts."""
    log_ratio = old.probs.clamp_min(1e-300).log() - new.probs.clamp_min(1e-300).log()
    per_state = (old.probs * log_ratio).sum(dim=1)
    return _weighted_mean(per_state.unsqueeze(1).expand_as(counts), counts)


def train_gail(
    policy: TabularPolicy,
    demos: Demonstrations,
    dynamics: TabularDynamics,
    config: GAILConfig = GAILConfig(),
    generator: torch.Generator | None = None,
) -> Trained[TabularPolicy, Tensor]:
    """GAIL from `policy` (the initial learner: uniform, or e.g. the BC policy).
    Learned: the recovered reward [S, V] (the summed rounds' policy rewards with
    anchor = previous, the last round's with anchor = uniform; see module doc)."""
    generator = generator or torch.Generator().manual_seed(0)
    disc = GAILDiscriminator(dynamics.n_states, dynamics.vocab_size, config.reward)
    result = adversarial_irl(policy, demos, dynamics, disc, config, generator)
    if config.anchor == "previous":
        return result
    return Trained(result.policy, result.records, disc.recovered_reward())


def train_airl(
    policy: TabularPolicy,
    demos: Demonstrations,
    dynamics: TabularDynamics,
    config: AdversarialIRLConfig = AdversarialIRLConfig(),
    generator: torch.Generator | None = None,
) -> Trained[TabularPolicy, Tensor]:
    """AIRL from `policy`. Learned: the recovered reward g [S, V]."""
    generator = generator or torch.Generator().manual_seed(0)
    disc = AIRLDiscriminator(dynamics.transition, dynamics.vocab_size, config.gamma)
    result = adversarial_irl(policy, demos, dynamics, disc, config, generator)
    return Trained(result.policy, result.records, disc.recovered_reward())
