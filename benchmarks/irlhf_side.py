"""The irlhf side: each function builds its state once and returns `run(steps)`, which trains
for `steps` optimiser steps through irlhf's public training functions (nothing re-implemented
here), or, for the sampler, draws one batch."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import PROMPT, Size, Workload, comparisons, lower_half_reward, random_tokens, sequences

from irlhf.algorithms.dagger import DAggerConfig, train_dagger
from irlhf.algorithms.dpo import DPOConfig, train_dpo
from irlhf.algorithms.policy_gradient import frozen_reference
from irlhf.algorithms.reward_model import NeuralRewardModel, RewardModelConfig
from irlhf.algorithms.rloo import RLOOConfig, train_rloo
from irlhf.algorithms.sft import SFTConfig, fit_neural
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import ExpertLabels, Sequences
from irlhf.worlds.base import Demonstrations, ExpertOracle

Run = Callable[[int], object]


def sft(policy: CausalLMPolicy, size: Size, work: Workload) -> Run:
    seqs = sequences(work.dataset, size.completion, seed=1)
    labels = [ExpertLabels(seqs, seqs.completion_mask, actions=seqs.tokens)]
    generator = torch.Generator().manual_seed(0)

    def run(steps: int) -> object:
        config = SFTConfig(steps=steps, batch_size=work.batch, lr=work.lr)
        return fit_neural(policy, labels, config, generator)

    return run


def reward_model(policy: CausalLMPolicy, size: Size, work: Workload) -> Run:
    data = comparisons(work.dataset, size.completion, seed=2)
    generator = torch.Generator().manual_seed(0)
    model = NeuralRewardModel(
        None,
        RewardModelConfig(kind="neural", steps=0, batch_size=work.batch, lr=work.lr),
        backbones=[policy],
    )

    def run(steps: int) -> object:
        model.config = model.config.model_copy(update={"steps": steps})
        return model.fit(data, generator)

    return run


def dpo(policy: CausalLMPolicy, size: Size, work: Workload) -> Run:
    data = comparisons(work.dataset, size.completion, seed=2)
    reference = frozen_reference(policy)
    generator = torch.Generator().manual_seed(0)

    def run(steps: int) -> object:
        config = DPOConfig(
            beta=work.dpo_beta, steps=steps, batch_size=work.batch, lr=work.lr, max_grad_norm=1.0
        )  # clipped at 1.0 like the peer
        return train_dpo(policy, reference, data, None, config, generator)

    return run


def rloo(policy: CausalLMPolicy, size: Size, work: Workload) -> Run:
    pool = random_tokens(work.dataset, PROMPT, seed=3)
    reference = frozen_reference(policy)
    generator = torch.Generator().manual_seed(0)

    def prompts(n: int, g: torch.Generator) -> torch.Tensor:
        return pool[torch.randint(len(pool), (n,), generator=g)]

    def score(seqs: Sequences) -> torch.Tensor:
        return lower_half_reward(seqs.tokens[:, PROMPT:])

    def run(steps: int) -> object:
        config = RLOOConfig(
            iterations=steps,
            prompts_per_iteration=work.rloo_prompts,
            samples_per_prompt=work.rloo_samples,
            max_new_tokens=size.completion,
            lr=work.lr,
            kl_coef=work.rloo_kl,
        )
        return train_rloo(policy, score, prompts, config, reference, generator)

    return run


class TeacherWorld:
    """The expert side of on-policy distillation: a teacher LM's next-token distribution at
    every prefix (all that `ExpertOracle` asks of a world), and prompts from a fixed pool."""

    def __init__(self, teacher: CausalLMPolicy, pool: torch.Tensor, horizon: int) -> None:
        self.teacher, self.pool, self.horizon = teacher.eval(), pool, horizon

    def sample_prompts(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.pool[torch.randint(len(self.pool), (n,), generator=generator)]

    def expert_probs(self, seqs: Sequences) -> torch.Tensor:
        """(B, T, V): the teacher's distribution of token t given tokens < t at the completion
        positions, the only ones the oracle labels; the prompt positions hold the uniform
        distribution instead of a teacher forward there. (TRL's GKDTrainer runs its teacher at
        every position and slices the completion's logits out: the same labels, plus work on
        prompt positions whose result it discards.)"""
        P, T = seqs.prompt_length, seqs.length
        with torch.no_grad():
            logits, _ = self.teacher.action_logits(seqs, start=P - 1, end=T - 1)  # (B, T-P, V)
            probs = logits.softmax(-1)
        return F.pad(probs, (0, 0, P, 0), value=1.0 / probs.shape[-1])  # (B, T, V)


def distillation(policy: CausalLMPolicy, size: Size, work: Workload, teacher) -> Run:
    """GKD with lmbda = 1: every step rolls the student out, the teacher labels every position
    with its full distribution, one generalized-JSD step (irlhf's DAgger loop, soft labels)."""
    pool = random_tokens(work.dataset, PROMPT, seed=3)
    world = TeacherWorld(teacher, pool, size.completion)
    generator = torch.Generator().manual_seed(0)
    demos = Demonstrations(
        policy.sample(pool[: work.batch], size.completion, torch.Generator().manual_seed(1)),
        1.0,
        0.0,
    )

    def run(steps: int) -> object:
        config = DAggerConfig(
            rounds=steps - 1,
            rollouts_per_round=work.batch,
            labels="soft",
            lmbda=1.0,
            fit=SFTConfig(steps=1, batch_size=work.batch, lr=work.lr, jsd_beta=work.jsd_beta),
        )
        return train_dagger(policy, demos, ExpertOracle(world), world, config, generator)

    return run


def sampler(policy: CausalLMPolicy, size: Size, work: Workload) -> Callable[[], int]:
    """One batch of `size.sample_tokens` new tokens per prompt; returns the tokens drawn."""
    prompts = random_tokens(work.sampler_batch, PROMPT, seed=4)
    generator = torch.Generator().manual_seed(0)

    def run() -> int:
        seqs = policy.sample(prompts, size.sample_tokens, generator)
        return int(seqs.completion_mask.sum())

    return run


def teacher_for(size: Size) -> CausalLMPolicy:
    return size.policy(seed=1).eval()


def fresh(policy: CausalLMPolicy) -> CausalLMPolicy:
    return copy.deepcopy(policy)
