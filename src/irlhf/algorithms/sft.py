"""Supervised fine-tuning = behaviour cloning: fit the policy to labelled prefixes.

Tabular: smoothed counts, pi(a|s) = (n(s, a) + k) / (n(s) + k V) — the maximum-likelihood table
with add-k smoothing. Neural: minibatch NLL (hard labels) or generalized JSD to the expert's
distribution (soft labels, Agarwal et al. 2024). `fit` is the one fitting step that SFT, DAgger and
on-policy distillation all call; `train_sft` fits the demonstrations' own next tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from pydantic import BaseModel, ConfigDict, Field

from irlhf import losses
from irlhf.algorithms.optim import adamw
from irlhf.algorithms.result import Learner, Trained
from irlhf.policies.ensemble import EnsemblePolicy, clip_member_grad_norms, member_mean_weights
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Dynamics, NeuralPolicy, TabularDynamics
from irlhf.types import ExpertLabels, Sequences
from irlhf.worlds.base import Demonstrations


class SFTConfig(BaseModel):
    """How behaviour cloning fits labels (the `[sft]` table of an experiment config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    smoothing: float = Field(0.1, ge=0.0)
    """Tabular: add-k pseudo-count per (state, token)."""
    steps: int = Field(300, ge=0)
    """Neural: optimiser steps per fit."""
    batch_size: int = Field(32, ge=1)
    """Neural: sequences per optimiser step."""
    lr: float = Field(3e-3, gt=0.0)
    """Neural: AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """Neural: AdamW weight decay."""
    jsd_beta: float = Field(0.0, ge=0.0, le=1.0)
    """Soft labels: generalized-JSD beta (0 = forward KL expert||student, 1 = reverse KL)."""


def demonstration_labels(demos: Demonstrations) -> ExpertLabels:
    """The demonstrations as labels: every completion token labels its own prefix."""
    seqs = demos.sequences
    return ExpertLabels(seqs, seqs.completion_mask, actions=seqs.tokens)


def fit_tabular(
    labels: list[ExpertLabels], dynamics: TabularDynamics, smoothing: float
) -> TabularPolicy:
    """The smoothed maximum-likelihood table for all labelled (state, token) pairs."""
    counts = torch.zeros(dynamics.n_states, dynamics.vocab_size, dtype=torch.float64)
    for batch in labels:
        states = dynamics.states(batch.sequences)[batch.mask]  # (N,)
        if batch.probs is not None:  # soft labels
            counts.index_add_(0, states, batch.probs[batch.mask].double())
        else:
            assert batch.actions is not None  # exactly one of probs, actions
            flat = states * dynamics.vocab_size + batch.actions[batch.mask]
            counts.view(-1).index_add_(0, flat, torch.ones(len(flat), dtype=torch.float64))
    counts += smoothing
    totals = counts.sum(dim=1, keepdim=True)
    # A state never labelled and unsmoothed gets the uniform distribution.
    probs = torch.where(totals > 0, counts / totals.clamp_min(1e-300), 1.0 / dynamics.vocab_size)
    return TabularPolicy(probs)


def label_loss(
    policy: NeuralPolicy, batch: ExpertLabels, jsd_beta: float
) -> tuple[torch.Tensor, dict]:
    """NLL of hard labels or generalized JSD to soft labels, at the labelled positions.

    Only positions from the first labelled one on are scored (the loss averages over labelled
    positions, so the others never count); a policy with `action_logits` (a CausalLMPolicy)
    computes its output layer only there.

    An `EnsemblePolicy`'s loss is the sum over members of each member's mean (the batch is
    the members' batches, member-major), so that each member gets its own run's gradient."""
    seqs, mask = batch.sequences.to(policy.device), batch.mask.to(policy.device)
    first = int(mask.any(dim=0).long().argmax()) if bool(mask.any()) else 0
    if first >= 1 and hasattr(policy, "action_logits"):
        end = seqs.length - 1
        logits = policy.action_logits(seqs, start=first - 1, end=end)[0]  # (B, T - first, A)
    else:
        first, logits = 0, policy.next_token_logits(seqs)  # (B, T, A)
    mask = mask[:, first:]
    members = policy.members if isinstance(policy, EnsemblePolicy) else 1
    weights = mask if members == 1 else member_mean_weights(mask, members)
    if batch.probs is not None:  # soft labels
        probs = batch.probs[:, first:].to(policy.device)
        teacher = probs.clamp_min(1e-12).log_().to(logits.dtype)  # log_: one tensor less
        loss, metrics = losses.generalized_jsd(logits, teacher, jsd_beta, mask=weights)
    else:
        assert batch.actions is not None  # exactly one of probs, actions
        loss, metrics = losses.nll(logits, batch.actions[:, first:].to(policy.device), weights)
    if members == 1:
        return loss, metrics
    # the metrics are the members' means; the token count is the ensemble's own
    count = next(k for k in metrics if k.endswith("/tokens"))
    return members * loss, metrics | {count: float(mask.sum())}


def fit_neural(
    policy: NeuralPolicy,
    labels: list[ExpertLabels],
    config: SFTConfig,
    generator: torch.Generator | Sequence[torch.Generator],
    optimizer: torch.optim.Optimizer | None = None,
) -> list[dict]:
    """`config.steps` minibatch steps on the union of `labels` (sampled uniformly over sequences).
    Returns one metric record per step.

    An `EnsemblePolicy` of M members takes every label batch as the members' data sets
    concatenated (member-major: a batch of M * n rows holds member m's n rows at m * n..) and
    one generator per member: member m draws its minibatch from its own data with its own
    generator, as its single run does, and the step trains on the members' minibatches
    concatenated (records: the members' mean of each metric)."""
    params = list(policy.parameters())  # walked once, not by every step's clipping
    optimizer = optimizer or adamw(params, config.lr, config.weight_decay)
    members = policy.members if isinstance(policy, EnsemblePolicy) else 1
    generators = [generator] if isinstance(generator, torch.Generator) else list(generator)
    if len(generators) != members:
        raise ValueError(f"{members} members need as many generators, got {len(generators)}")
    if any(b.sequences.batch_size % members for b in labels):
        raise ValueError(f"label batches must hold {members} members' equal data sets")
    sizes = torch.tensor([b.sequences.batch_size // members for b in labels])  # per member
    offsets = torch.cumsum(sizes, 0) - sizes
    records = []
    policy.train()
    for step in range(config.steps):
        picks = torch.stack(
            [torch.randint(int(sizes.sum()), (config.batch_size,), generator=g) for g in generators]
        )  # (M, batch_size): member m's picks in its own data
        batch = _gather(labels, offsets, picks)
        metrics = label_step(policy, batch, optimizer, params, config.jsd_beta)
        records.append({"step": step, **metrics})
    policy.eval()
    return records


def label_step(
    policy: NeuralPolicy,
    batch: ExpertLabels,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    jsd_beta: float,
) -> dict:
    """One optimiser step on `label_loss` (gradient norm clipped to 1, as TRL's default; an
    ensemble's per member); SFT, DAgger and GKD all step through here. Returns the loss's
    metrics."""
    loss, metrics = label_loss(policy, batch, jsd_beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if isinstance(policy, EnsemblePolicy):
        clip_member_grad_norms(params, 1.0, policy.members)
    else:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return metrics


def _gather(labels: list[ExpertLabels], offsets: torch.Tensor, picks: torch.Tensor) -> ExpertLabels:
    """Rows `picks` (M, b) of a list of label batches with equal lengths and kinds: member m's
    picks index its union of the batches (offsets: where each batch starts in it), its rows of
    a batch being the m-th of M equal blocks (M = 1: a single run). The result is member-major
    and, within a member, grouped by batch in pick order (a single run's order).
    Each field is gathered batch by batch and concatenated, and only the result is built (and
    validated) as `Sequences` and `ExpertLabels`: DAgger's aggregated data set has one batch
    per round, and a container per batch cost more than the copies."""
    M = picks.shape[0]
    which = torch.searchsorted(offsets, picks, right=True) - 1  # (M, b)
    member_rows = torch.arange(M)[:, None] * torch.tensor(
        [b.sequences.batch_size // M for b in labels]
    )
    parts = [
        (labels[i], (picks - offsets[i] + member_rows[:, i : i + 1])[which == i])
        for i in which.unique().tolist()
    ]  # each part member-major
    order = None
    if M > 1 and len(parts) > 1:  # from batch-major (the parts' order) to member-major
        flat = which.flatten()
        rank = torch.empty_like(flat)
        rank[torch.argsort(flat, stable=True)] = torch.arange(len(flat))
        key = (torch.arange(M)[:, None] * len(labels) + which).flatten()
        order = rank[torch.argsort(key, stable=True)]

    def gather(field) -> torch.Tensor:
        pieces = [field(b)[rows] for b, rows in parts]
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return out if order is None else out[order]

    soft = parts[0][0].soft
    seqs = Sequences(
        gather(lambda b: b.sequences.tokens),
        gather(lambda b: b.sequences.prompt_mask),
        gather(lambda b: b.sequences.completion_mask),
    )
    return ExpertLabels(
        seqs,
        gather(lambda b: b.mask),
        actions=None if soft else gather(lambda b: b.actions),
        probs=gather(lambda b: b.probs) if soft else None,
    )


def train_sft(
    policy: Learner,
    demos: Demonstrations,
    dynamics: Dynamics,
    config: SFTConfig = SFTConfig(),
    generator: torch.Generator | None = None,
) -> Trained[Learner, None]:
    """Behaviour cloning on the demonstrations. `policy` is a TabularPolicy (only its shape is
    used; `dynamics` must then be tabular) or a neural policy trained in place."""
    labels = [demonstration_labels(demos)]
    if isinstance(policy, TabularPolicy):
        table = fit_tabular(labels, cast(TabularDynamics, dynamics), config.smoothing)
        return Trained(cast(Learner, table), [], None)
    generator = generator or torch.Generator().manual_seed(0)
    return Trained(policy, fit_neural(policy, labels, config, generator), None)
