"""Adversarial imitation for neural (token-sequence) policies: GAIL (Ho & Ermon 2016) and AIRL
(Fu et al. 2018), the tabular loop of `adversarial_irl` with a network for the table.

The state is the prefix, the action the next token. The discriminator is a small causal
transformer (`CausalLMPolicy.tiny`) whose output at position t over the action vocabulary scores
every next token at once: g(prefix_<=t, a) = out[t, a], so one forward pass scores every
(prefix, token) pair of a batch. A linear potential head on the same hidden states (PPO's
`ValueHead`) gives h(prefix_<=t). Per completion token a_t with prefix s_t = tokens_<t:

  GAIL   logit(s_t, a_t) = g(s_t, a_t);  policy reward softplus(logit) = -log(1 - D) ("softplus")
         or logit = log D - log(1 - D) ("logit"); recovered reward = the policy reward.
  AIRL   f(s_t, a_t) = g(s_t, a_t) + gamma h(s_t + a_t) - h(s_t)      (`shaped_reward`),
         logit = f - log pi(a_t | s_t)                                 (`losses.airl_logits`),
         policy reward f - log pi; recovered reward g. The sequence ends by truncation at the
         horizon, so h of the last prefix is kept (as the tabular AIRL, which has no terminals).
         By default g = log softmax(out[t])[a] (`normalized_g`) and the network starts as a
         copy of the starting policy (`disc_init`), as measured below.

Each round: (1) sample the learner's own sequences (the discriminator's negatives); (2) a few
AdamW steps on `losses.gail_discriminator`, demonstrator (prefix, token) pairs = 1, learner
pairs = 0; (3) the policy step: `ppo.train_ppo` for a few iterations with the discriminator's
per-token reward as its [B, T] score, a KL penalty to the *starting* policy when
`policy_step.kl_coef > 0`, and one value head kept across rounds. PPO keeps the token rewards
per token (GAE), the natural fit for a per-token discriminator; it is the same rollout ->
advantages -> update path RLHF uses (`policy_gradient`), not a second one. Each `train_ppo`
call starts a fresh AdamW (its moments are reset every round).

Measured (spread world, horizon 16, 200 demonstrations, 1000 BC steps, 20 rounds; MC J, SE ~0.3;
demonstrator 16.1; seeds 0-2): BC 11.6, 10.9, 11.5; GAIL 11.7, 11.4, 10.4; AIRL 11.4, 10.9, 11.4:
neither beats BC at this budget (with an earlier BC fit, 11.8, 11.2, 11.4, GAIL reached 13.0,
13.6, 13.4: its gain depends on the start). AIRL with a fresh unnormalised g fell to 3.0, 2.9,
2.6 -- f - log pi is a bare entropy bonus until f has learned log pi_demo -- hence its default
g = log softmax of a copy of the starting policy (D = 1/2 at the start; Barde et al. 2020).

Training sees the demonstrations, the dynamics (prompts) and the learner's own rollouts only.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from irlhf import losses
from irlhf.algorithms import policy_gradient as pg
from irlhf.algorithms.optim import adamw
from irlhf.algorithms.ppo import PPOConfig, ValueHead, train_ppo
from irlhf.algorithms.result import Trained
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.protocols import Dynamics
from irlhf.types import Sequences
from irlhf.worlds.base import Demonstrations


class NeuralAdversarialIRLConfig(BaseModel):
    """The adversarial loop shared by neural GAIL and AIRL (the `[neural_airl]` table)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    rounds: int = Field(20, ge=0)
    """Rounds of (learner rollouts, discriminator steps, policy step)."""
    rollouts_per_round: int = Field(64, ge=1)
    """Learner sequences sampled per round as the discriminator's negatives."""
    disc_steps: int = Field(10, ge=1)
    """AdamW steps on the discriminator per round."""
    disc_batch_size: int = Field(32, ge=1)
    """Demonstrator sequences per discriminator step (and as many learner sequences)."""
    disc_lr: float = Field(1e-3, gt=0.0)
    """Discriminator AdamW learning rate."""
    disc_weight_decay: float = Field(0.0, ge=0.0)
    """Discriminator AdamW weight decay (keeps logits of one-sided pairs finite)."""
    disc_init: Literal["random", "policy"] = "policy"
    """"random": a fresh transformer of the size below; "policy": a trainable copy of the
    starting policy (as RLHF reward models start from SFT; sizes ignored). GAIL: "random"."""
    normalized_g: bool = True
    """AIRL: g(s, a) = log softmax of the network's output, a log-probability log q(a | s), so
    that D = q / (q + pi) up to shaping (Barde et al. 2020's ASAF). With disc_init = "policy"
    D starts at exactly 1/2 and the reward f - log pi at 0, instead of a bare entropy bonus.
    GAIL ignores it."""
    disc_layers: int = Field(1, ge=1)
    """Discriminator transformer blocks."""
    disc_width: int = Field(32, ge=8)
    """Discriminator width (hidden units)."""
    disc_heads: int = Field(2, ge=1)
    """Discriminator attention heads (must divide disc_width)."""
    gamma: float = Field(0.95, ge=0.0, le=1.0)
    """AIRL: discount of the shaping term gamma h(s') - h(s) and of its PPO step (GAIL ignores
    it)."""
    policy_step: PPOConfig = PPOConfig(
        iterations=2, prompts_per_iteration=32, lr=1e-4, kl_coef=0.0, whiten_advantages=False
    )
    """The policy step per round: `iterations` PPO iterations; `max_new_tokens` is replaced by
    the demonstrations' length; `kl_coef` (reward units per nat) penalises KL to the starting
    policy. Unwhitened: whitening scales a near-chance discriminator's noise up to unit
    advantages (spread, horizon 16, GAIL from BC at J 11.8: whitened 4.5, unwhitened 13.0)."""


class NeuralGAILConfig(NeuralAdversarialIRLConfig):
    """Neural GAIL (the `[neural_gail]` table)."""

    disc_init: Literal["random", "policy"] = "random"
    """"random": a fresh transformer of the size below; "policy": a trainable copy of the
    starting policy (sizes ignored)."""
    reward: Literal["softplus", "logit"] = "softplus"
    """Policy reward: -log(1 - D) = softplus(logit), or log D - log(1 - D) = logit."""


def shaped_reward(g: Tensor, potentials: Tensor, gamma: float) -> Tensor:
    """AIRL's f [B, C] = g + gamma h(s_{t+1}) - h(s_t) from g [B, C] (one per completion token)
    and the potentials [B, C + 1] of the prefixes s_0 .. s_C (s_t = the prefix before token t)."""
    B, C = g.shape
    if tuple(potentials.shape) != (B, C + 1):
        raise ValueError(f"potentials must be [{B}, {C + 1}], got {tuple(potentials.shape)}")
    return g + gamma * potentials[:, 1:] - potentials[:, :-1]


class TokenDiscriminator(nn.Module):
    """g(prefix, token) from a causal transformer's action logits and h(prefix) from a linear
    head on its hidden states; every (prefix, token) pair of a batch in one forward pass."""

    def __init__(
        self,
        network: CausalLMPolicy,
        kind: Literal["gail", "airl"],
        gamma: float = 1.0,
        reward: Literal["softplus", "logit"] = "softplus",
        normalized_g: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.model = network.model  # registered: its parameters are this module's
        self.potential = ValueHead(network)  # h = w . hidden + b, initialised to 0
        self.gamma, self.kind, self.reward = gamma, kind, reward
        self.normalized_g = normalized_g

    @staticmethod
    def build(
        dynamics: Dynamics,
        max_length: int,
        config: NeuralAdversarialIRLConfig,
        kind: Literal["gail", "airl"],
        seed: int,
        policy: CausalLMPolicy | None = None,
    ) -> TokenDiscriminator:
        """A discriminator for the sequences of `dynamics` (up to `max_length` tokens): a fresh
        network, or a trainable copy of the starting `policy` (disc_init = "policy")."""
        if config.disc_init == "policy":
            if policy is None:
                raise ValueError('disc_init = "policy" needs the starting policy')
            network = copy.deepcopy(policy)
            for param in network.parameters():
                param.requires_grad_(True)
        elif config.disc_width % config.disc_heads:
            raise ValueError(f"disc_heads ({config.disc_heads}) must divide disc_width")
        else:
            network = CausalLMPolicy.tiny(
                dynamics.token_vocab_size,
                dynamics.vocab_size,
                n_layer=config.disc_layers,
                n_embd=config.disc_width,
                n_head=config.disc_heads,
                max_length=max_length,
                seed=seed,
            )
        reward = config.reward if isinstance(config, NeuralGAILConfig) else "logit"
        normalized = config.normalized_g and kind == "airl"
        return TokenDiscriminator(network, kind, config.gamma, reward, normalized)

    def g_and_f(self, seqs: Sequences) -> tuple[Tensor, Tensor]:
        """g and f = g + gamma h(s') - h(s), each (B, T) aligned with `seqs.tokens` (position t
        scores token t after tokens_<t) and 0 off the completion."""
        P, T, A = seqs.prompt_length, seqs.length, self.network.action_vocab_size
        seqs = seqs.to(self.network.device)
        # positions P-1 .. T-1: the prefixes s_0 .. s_C before each completion token and after
        logits, hidden = self.network.action_logits(seqs, start=P - 1, end=T, hidden=True)
        if self.normalized_g:
            logits = logits.log_softmax(dim=-1)  # log q(a | prefix)
        targets = seqs.tokens[:, P:].clamp(max=A - 1).unsqueeze(-1)  # (B, C, 1)
        g = logits[:, :-1].gather(-1, targets).squeeze(-1)  # (B, C)
        f = shaped_reward(g, self.potential(hidden), self.gamma)  # (B, C)
        mask = seqs.completion_mask
        return F.pad(g, (P, 0)) * mask, F.pad(f, (P, 0)) * mask

    def logits(self, seqs: Sequences, log_pi: Tensor | None = None) -> Tensor:
        """(B, T) logit of D = P(demonstrator | prefix, token); AIRL needs log_pi (B, T), the
        learner's log pi of each token (detached)."""
        g, f = self.g_and_f(seqs)
        if self.kind == "gail":
            return g
        if log_pi is None:
            raise ValueError("AIRL's logit f - log pi needs the learner's log_pi")
        logits, _ = losses.airl_logits(f, log_pi.detach().to(f.device))
        return logits * seqs.completion_mask.to(f.device)

    def policy_reward(self, seqs: Sequences, log_pi: Tensor | None = None) -> Tensor:
        """(B, T) the per-token reward the policy step maximises (GAIL: softplus(g) or g;
        AIRL: f - log pi)."""
        logits = self.logits(seqs, log_pi)
        if self.kind == "gail" and self.reward == "softplus":
            return F.softplus(logits) * seqs.completion_mask.to(logits.device)
        return logits

    def recovered_reward(self, seqs: Sequences) -> Tensor:
        """(B, T) the discriminator's own reward per token: GAIL its policy reward, AIRL g."""
        g, _ = self.g_and_f(seqs)
        return g if self.kind == "airl" else self.policy_reward(seqs)


def train_adversarial(
    policy: CausalLMPolicy,
    demos: Demonstrations,
    dynamics: Dynamics,
    config: NeuralAdversarialIRLConfig,
    kind: Literal["gail", "airl"],
    generator: torch.Generator,
) -> Trained[CausalLMPolicy, TokenDiscriminator]:
    """The loop neural GAIL and AIRL share, from `policy` (trained in
    place): rollouts -> discriminator -> per-token reward -> PPO. Returns the policy, one record
    per round and the discriminator."""
    expert = demos.sequences.to(policy.device)
    horizon = expert.length - expert.prompt_length
    # AIRL's shaping g + gamma h(s') - h(s) telescopes only under the same discount, so its
    # policy step discounts by config.gamma (as the tabular AIRL); GAIL keeps the PPO table's.
    update = {"max_new_tokens": horizon} | ({"gamma": config.gamma} if kind == "airl" else {})
    step = config.policy_step.model_copy(update=update)
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    disc = TokenDiscriminator.build(dynamics, expert.length, config, kind, seed, policy)
    disc.to(policy.device)
    optimizer = adamw(disc.parameters(), config.disc_lr, config.disc_weight_decay, fused=False)
    reference = pg.frozen_reference(policy) if step.kl_coef > 0 else None
    value_head = ValueHead(policy)
    temperature = step.temperature

    def score(seqs: Sequences) -> Tensor:  # (B, T), called by the rollout with pi_old = policy
        log_pi = pg.forward(policy, seqs, temperature)[0] if kind == "airl" else None
        return disc.policy_reward(seqs, log_pi)

    records = []
    for round_ in range(1, config.rounds + 1):
        # 1. The learner's own (prefix, token) pairs, with log pi of each drawn token.
        prompts = dynamics.sample_prompts(config.rollouts_per_round, generator)
        learner, learner_log_pi = policy.sample_with_log_probs(
            prompts, horizon, generator, temperature=temperature
        )
        expert_log_pi = torch.zeros(expert.tokens.shape)  # only AIRL's logits read log pi
        if kind == "airl":
            with torch.inference_mode():
                expert_log_pi = pg.forward(policy, expert, temperature)[0]
            expert_log_pi = expert_log_pi.clone()
        # 2. Discriminator: demonstrator pairs = 1, learner pairs = 0.
        disc.train()
        for _ in range(config.disc_steps):
            pos = torch.randint(expert.batch_size, (config.disc_batch_size,), generator=generator)
            neg = torch.randint(learner.batch_size, (config.disc_batch_size,), generator=generator)
            batch = Sequences.concat([expert[pos], learner[neg]])  # one forward for both
            log_pi = torch.cat([expert_log_pi[pos], learner_log_pi[neg]])
            logits = disc.logits(batch, log_pi)  # (2n, T)
            mask = batch.completion_mask
            n = config.disc_batch_size
            loss, metrics = losses.gail_discriminator(
                logits[:n], logits[n:], expert_mask=mask[:n], policy_mask=mask[n:]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
            optimizer.step()
        disc.eval()
        # 3. Policy step: PPO against the discriminator's per-token reward.
        steps = train_ppo(  # trains `policy` in place
            policy, score, dynamics.sample_prompts, step, reference, generator, value_head
        ).records
        last = {k: v for k, v in steps[-1].items() if k != "iteration"} if steps else {}
        records.append(
            {
                "round": round_,
                **metrics,
                "disc/accuracy": 0.5 * (metrics["disc/expert_acc"] + metrics["disc/policy_acc"]),
                **last,
            }
        )
    return Trained(policy, records, disc)


def train_neural_gail(
    policy: CausalLMPolicy,
    demos: Demonstrations,
    dynamics: Dynamics,
    config: NeuralGAILConfig = NeuralGAILConfig(),
    generator: torch.Generator | None = None,
) -> Trained[CausalLMPolicy, TokenDiscriminator]:
    """Neural GAIL from `policy` (trained in place). Learned: the discriminator
    (`recovered_reward(seqs)` gives its per-token reward)."""
    generator = generator or torch.Generator().manual_seed(0)
    return train_adversarial(policy, demos, dynamics, config, "gail", generator)


def train_neural_airl(
    policy: CausalLMPolicy,
    demos: Demonstrations,
    dynamics: Dynamics,
    config: NeuralAdversarialIRLConfig = NeuralAdversarialIRLConfig(),
    generator: torch.Generator | None = None,
) -> Trained[CausalLMPolicy, TokenDiscriminator]:
    """Neural AIRL from `policy` (trained in place). Learned: the discriminator
    (`recovered_reward(seqs)` gives g per token)."""
    generator = generator or torch.Generator().manual_seed(0)
    return train_adversarial(policy, demos, dynamics, config, "airl", generator)
