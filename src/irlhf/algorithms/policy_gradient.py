"""The one policy-gradient path every RL method here shares: rollout -> scores -> advantages ->
minibatch update (`train`). RLOO and PPO call it with their own advantages and loss; GAIL/AIRL
only bring their own `score`.

RLHF maximises a given reward under a KL penalty to a frozen reference pi_ref, the SFT policy
(Ziegler et al. 2019, "Fine-Tuning LMs from Human Preferences"; Stiennon et al. 2020; Ouyang et
al. 2022, InstructGPT):

    max_pi  E_{x ~ prompts, y ~ pi(.|x)} [ score(x, y) ] - beta KL(pi(.|x) || pi_ref(.|x))

The KL is estimated per token from the sampled tokens (`losses.kl_penalty`; k1 by default, as
TRL and InstructGPT), which turns the objective into a per-token reward

    kl_t = log pi_old(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)
    r_t  = s_t - beta kl_t

where s_t is the sequence score placed on the last completion token, or a token-level score when
`score` returns [B, T] (as GAIL/AIRL discriminators do). RLOO sums r_t into one sequence reward;
PPO keeps it per token for GAE.

Lean by construction: rollouts run under `torch.inference_mode`; pi_old comes from the sampler
(`CausalLMPolicy.sample_with_log_probs` returns the log-prob of each drawn token under the
distribution it was drawn from, which at temperature t is softmax(logits / t), exactly what
`forward` computes, so no extra forward pass); the reference is skipped when beta = 0; the
training forward computes logits only at completion positions and gathers log-probs with one
fused cross-entropy kernel (`gathered_log_probs`), never keeping a [B, T, V] log-softmax. Dropout is
off throughout (the policy stays in eval mode, as TRL's `disable_dropout`), so pi_old is the
policy being trained and the first minibatch's ratio is 1.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from irlhf import losses
from irlhf.policies.causal_lm import CausalLMPolicy, gathered_log_probs
from irlhf.types import Sequences

Metrics = dict[str, float]
ScoreFn = Callable[[Sequences], Tensor]
"""score(seqs) -> [B] sequence rewards, or [B, T] token rewards aligned with `seqs.tokens`."""
PromptSampler = Callable[[int, torch.Generator], Tensor]
"""prompts(n, generator) -> [n, P] long, e.g. `world.dynamics().sample_prompts`."""
LossFn = Callable[[dict[str, Any]], tuple[Tensor, Metrics]]
BatchFn = Callable[["Rollout"], tuple[dict[str, Any], Metrics]]
"""make_batch(rollout) -> (the update's batch, with the advantages; their metrics)."""


class PolicyGradientConfig(BaseModel):
    """The knobs RLOO and PPO share (each algorithm's config extends this)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    iterations: int = Field(100, ge=0)
    """Rollout-then-update iterations (optimiser steps = iterations x epochs x minibatches)."""
    prompts_per_iteration: int = Field(32, ge=1)
    """Prompts sampled per iteration."""
    samples_per_prompt: int = Field(4, ge=1)
    """Completions sampled per prompt; batch = prompts_per_iteration x samples_per_prompt."""
    max_new_tokens: int = Field(32, ge=1)
    """Completion length in tokens."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature; every log-prob (old, new, reference) is of softmax(logits / t)."""
    lr: float = Field(1e-3, gt=0.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    kl_coef: float = Field(0.05, ge=0.0)
    """beta: reward units per nat of KL to the reference (TRL's default 0.05); 0 = no KL."""
    kl_estimator: Literal["k1", "k2", "k3", "abs"] = "k1"
    """Per-token KL estimator in the reward (`losses.kl_penalty`); k1 as TRL and InstructGPT."""
    clip_eps: float = Field(0.2, gt=0.0)
    """PPO ratio clip epsilon."""
    epochs: int = Field(1, ge=1)
    """Passes over each rollout batch."""
    minibatch_size: int | None = Field(None, ge=1)
    """Sequences per optimiser step; None = the whole batch (one step per epoch)."""
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    """Global gradient-norm clip; None = no clipping."""
    target_kl: float | None = Field(None, gt=0.0)
    """Stop the epochs at the first minibatch whose approx KL to pi_old exceeds this (before its
    step, as Stable-Baselines3); None = never."""


@dataclass(frozen=True)
class Rollout:
    """One batch of experience; every tensor is [B, T], aligned with `sequences.tokens`, and 0
    off the completion.

    log_probs:     log pi_old(token_t | tokens_<t), from the sampler
    ref_log_probs: log pi_ref(token_t | tokens_<t) (equal to log_probs when there is no reference)
    scores:        s_t, the given reward per token (a sequence score sits on the last token)
    kl:            the per-token KL estimate
    rewards:       r_t = s_t - kl_coef * kl_t
    """

    sequences: Sequences
    log_probs: Tensor
    ref_log_probs: Tensor
    scores: Tensor
    kl: Tensor
    rewards: Tensor


def frozen_reference(policy: CausalLMPolicy) -> CausalLMPolicy:
    """A frozen copy of `policy` (the usual reference: the policy RL starts from)."""
    reference = copy.deepcopy(policy).eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    return reference


def forward(
    policy: CausalLMPolicy,
    seqs: Sequences,
    temperature: float = 1.0,
    value_head: nn.Module | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The one training forward: per-token log-probs (B, T) and, with `value_head`, values (B, T).

    log_probs[:, t] = log softmax(logits_{t-1} / temperature)[token_t] and values[:, t] =
    value_head(h_{t-1}), the value of the prefix before token t (h = last hidden states); both
    are 0 off the completion. Completions must follow a left-aligned prompt of equal length.
    """
    P, A = seqs.prompt_length, policy.action_vocab_size
    mask = seqs.completion_mask
    if P < 1 or bool(mask[:, :P].any()):
        raise ValueError(f"completions must start after the prompt (position {P} >= 1)")
    # positions P-1 .. T-2 only: position P-1+i predicts token P+i
    T, with_values = seqs.length, value_head is not None
    logits, hidden = policy.action_logits(seqs, start=P - 1, end=T - 1, hidden=with_values)
    if temperature != 1.0:
        logits = logits / temperature
    targets = seqs.tokens[:, P:].clamp(max=A - 1)  # (B, C); padding is masked
    log_probs = F.pad(gathered_log_probs(logits, targets), (P, 0)) * mask  # (B, T)
    if value_head is None:
        return log_probs, None
    # hidden (B, C, H): the prefix before each token
    return log_probs, F.pad(value_head(hidden), (P, 0)) * mask


def token_scores(raw: Tensor, seqs: Sequences) -> Tensor:
    """A score [B] moved onto each sequence's last completion token, or a token score [B, T]
    masked to the completion: (B, T) float."""
    B, T = seqs.tokens.shape
    mask = seqs.completion_mask
    if not raw.is_floating_point() or tuple(raw.shape) not in ((B,), (B, T)):
        raise ValueError(f"score must return float [{B}] or [{B}, {T}], got {tuple(raw.shape)}")
    if raw.dim() == 2:
        return raw.to(torch.float32) * mask
    last = mask & (mask.cumsum(1) == mask.sum(1, keepdim=True))  # (B, T) one-hot
    return raw.to(torch.float32).unsqueeze(1) * last


def rollout(
    policy: CausalLMPolicy,
    reference: CausalLMPolicy | None,
    score: ScoreFn,
    prompts: Tensor,
    max_new_tokens: int,
    generator: torch.Generator,
    kl_coef: float = 0.0,
    kl_estimator: Literal["k1", "k2", "k3", "abs"] = "k1",
    temperature: float = 1.0,
) -> tuple[Rollout, Metrics]:
    """Sample completions of `prompts` [B, P], score them, and shape the reward with the KL
    to `reference` (None: no KL term, so kl_coef must be 0). Returns the rollout and metrics
    "reward/mean" (sequence score), "reward/std", "reward/total" (score - kl_coef * KL),
    "kl/mean" (per token), "kl/sequence" (summed per sequence)."""
    if reference is None and kl_coef > 0:
        raise ValueError(f"kl_coef = {kl_coef} > 0 needs a reference policy")
    seqs, log_probs = policy.sample_with_log_probs(
        prompts, max_new_tokens, generator, temperature=temperature
    )
    with torch.inference_mode():
        raw = score(seqs)
        ref = None if reference is None else forward(reference, seqs, temperature)[0]
    # clone outside inference mode: inference tensors cannot be saved for a later backward
    scores = token_scores(raw.clone().to(log_probs.device), seqs)
    ref_log_probs = log_probs if ref is None else ref.clone()
    mask = seqs.completion_mask
    kl, kl_metrics = losses.kl_penalty(log_probs, ref_log_probs, kl_estimator, mask)
    kl = kl * mask
    rewards = scores - kl_coef * kl  # (B, T)
    sequence_scores = scores.sum(1)  # (B,)
    metrics = {
        "reward/mean": sequence_scores.mean().item(),
        "reward/std": sequence_scores.std(correction=0).item(),
        "reward/total": rewards.sum(1).mean().item(),
        **kl_metrics,
        "kl/sequence": kl.sum(1).mean().item(),
    }
    return Rollout(seqs, log_probs, ref_log_probs, scores, kl, rewards), metrics


def update(
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, Any],
    loss_fn: LossFn,
    epochs: int,
    minibatch_size: int | None,
    generator: torch.Generator,
    max_grad_norm: float | None = 1.0,
    target_kl: float | None = None,
) -> tuple[list[Metrics], bool]:
    """`epochs` passes over `batch` in shuffled minibatches, one optimiser step each.

    `batch` maps names to row-indexable values with B rows (tensors, `Sequences`); `loss_fn`
    gets the same mapping restricted to a minibatch and returns (loss, metrics). With
    `target_kl`, the metrics must hold "ppo/approx_kl"; the first minibatch above it is not
    stepped and ends the update. Returns one record per step (the loss's metrics plus
    "optim/grad_norm", "optim/epoch") and whether it stopped early.
    """
    size = len(next(iter(batch.values())))
    minibatch_size = min(minibatch_size or size, size)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    records: list[Metrics] = []
    for epoch in range(epochs):
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, minibatch_size):
            rows = order[start : start + minibatch_size]
            loss, metrics = loss_fn({name: value[rows] for name, value in batch.items()})
            if target_kl is not None and metrics["ppo/approx_kl"] > target_kl:
                return records, True
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                grad_norm = nn.utils.clip_grad_norm_(params, max_grad_norm).item()
            else:
                # the norm without clipping (an infinite max norm scales by exactly 1)
                grad_norm = nn.utils.clip_grad_norm_(params, float("inf")).item()
            optimizer.step()
            records.append({**metrics, "optim/grad_norm": grad_norm, "optim/epoch": epoch})
    return records, False


def summarize(records: list[Metrics], stopped_early: bool) -> Metrics:
    """The mean of each metric over the update's steps, plus "optim/steps" and
    "optim/early_stop" (1.0 when target_kl ended the epochs)."""
    keys = [k for k in records[0] if k != "optim/epoch"] if records else []
    means = {k: sum(r[k] for r in records) / len(records) for k in keys}
    return {**means, "optim/steps": float(len(records)), "optim/early_stop": float(stopped_early)}


def sample_prompt_groups(
    prompts: PromptSampler, n_prompts: int, samples_per_prompt: int, generator: torch.Generator
) -> Tensor:
    """[n_prompts * k, P]: each prompt repeated k times in a row (rows i*k .. i*k + k-1)."""
    return prompts(n_prompts, generator).repeat_interleave(samples_per_prompt, dim=0)


def train(
    policy: CausalLMPolicy,
    score: ScoreFn,
    prompts: PromptSampler,
    config: PolicyGradientConfig,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    make_batch: BatchFn,
    reference: CausalLMPolicy | None = None,
    generator: torch.Generator | None = None,
) -> list[Metrics]:
    """The loop RLOO and PPO share, `config.iterations` times: rollout -> the algorithm's
    `make_batch` (its advantages) -> minibatch epochs of its `loss_fn` with `optimizer`, which
    trains `policy` in place. `reference` defaults to a frozen copy of the starting policy (none
    when kl_coef = 0), `generator` to one seeded 0. Returns one record per iteration:
    "iteration", the rollout's metrics, the advantages', the update's means (`summarize`) and
    "time/iteration_s"."""
    generator = generator or torch.Generator().manual_seed(0)
    if reference is None and config.kl_coef > 0:
        reference = frozen_reference(policy)
    policy.eval()  # dropout off: the sampler's log-probs are pi_old's
    records = []
    for iteration in range(config.iterations):
        start = time.perf_counter()
        # 1. rollout: samples_per_prompt completions of each prompt, scored, KL-shaped
        prompt_batch = sample_prompt_groups(
            prompts, config.prompts_per_iteration, config.samples_per_prompt, generator
        )  # (n * k, P)
        batch, rollout_metrics = rollout(
            policy,
            reference,
            score,
            prompt_batch,
            config.max_new_tokens,
            generator,
            config.kl_coef,
            config.kl_estimator,
            config.temperature,
        )
        # 2. advantages, and the batch the update iterates over
        data, advantage_metrics = make_batch(batch)
        # 3. update: minibatch epochs of the algorithm's loss
        steps, stopped = update(
            optimizer,
            data,
            loss_fn,
            config.epochs,
            config.minibatch_size,
            generator,
            config.max_grad_norm,
            config.target_kl,
        )
        records.append(
            {
                "iteration": iteration,
                **rollout_metrics,
                **advantage_metrics,
                **summarize(steps, stopped),
                "time/iteration_s": time.perf_counter() - start,
            }
        )
    return records
