"""Direct Preference Optimisation: fit the policy to comparisons, no explicit reward model.

DPO (Rafailov et al. 2023) reparameterises the KL-regularised RLHF optimum,
pi*(y) ∝ pi_ref(y) exp(r(y) / beta), so that the reward is r(y) = beta log(pi(y) / pi_ref(y)) up to
a per-prompt constant, and fits that implicit reward with the Bradley-Terry likelihood:

    L = -mean log sigmoid(beta [(log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r))])

(`irlhf.losses.dpo`). Sequence log-probs are sums over completion tokens. For a tabular policy
the parameters are a logits table theta[s, a] (log pi(a|s) = log_softmax(theta[s])[a], starting
from the given policy) and log pi(y) = sum_t log pi(a_t | s_t) along the latent states; any neural
policy with `log_probs(seqs)` -> [B, T] and `parameters()` is trained in place. The reference
(normally the SFT policy) is scored once, before training.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from irlhf import losses
from irlhf.algorithms.optim import adamw
from irlhf.algorithms.result import Trained
from irlhf.algorithms.reward_model import (
    select_comparisons,
    sequence_log_probs,
    state_action_counts,
)
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Dynamics, NeuralPolicy, TabularDynamics
from irlhf.types import Comparisons, Sequences


class DPOConfig(BaseModel):
    """Direct Preference Optimisation (the `[dpo]` table of an experiment config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    beta: float = Field(0.1, gt=0.0)
    """KL-regularisation strength of the implicit reward beta log(pi / pi_ref)."""
    label_smoothing: float = Field(0.0, ge=0.0, le=0.5)
    """Assumed label-flip probability (conservative DPO); 0 = plain DPO."""
    steps: int = Field(100, ge=0)
    """Optimiser steps. DPO's loss has no minimiser on separable comparisons, so the number of
    steps is a regulariser: long training drives rejected tokens' mass onto unseen tokens."""
    batch_size: int | None = Field(None, ge=1)
    """Comparisons per step; None = the full batch every step."""
    lr: float = Field(0.01, gt=0.0)
    """AdamW learning rate (a tabular logits table takes ~0.01; a neural LM wants ~1e-4)."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay (it pulls logits toward 0 = uniform, not toward the reference)."""
    max_grad_norm: float | None = Field(None, gt=0.0)
    """Global gradient-norm clip before each step (TRL's default is 1.0); None = no clipping."""


class _TabularScorer:
    """Sequence log-probs of a trainable logits table theta [S, V] on fixed comparisons:
    log pi(y) = counts(y) . log_softmax(theta), with the (state, token) counts computed once."""

    def __init__(
        self, dynamics: TabularDynamics, init: TabularPolicy, comparisons: Comparisons
    ) -> None:
        # log(0) would be -inf; a finite floor keeps the gradient defined (the token stays ~0).
        self.logits = nn.Parameter(init.probs.clamp_min(1e-30).log().clone())  # (S, V)
        self.chosen = state_action_counts(dynamics, comparisons.chosen)  # (N, S * V)
        self.rejected = state_action_counts(dynamics, comparisons.rejected)

    def parameters(self) -> list[nn.Parameter]:
        return [self.logits]

    def __call__(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        log_table = torch.log_softmax(self.logits, dim=-1).flatten()  # (S * V,)
        return self.chosen[rows] @ log_table, self.rejected[rows] @ log_table

    def policy(self) -> TabularPolicy:
        return TabularPolicy.from_logits(self.logits.detach())


class _NeuralScorer:
    """Sequence log-probs of a neural policy (trained in place) on fixed comparisons."""

    def __init__(self, policy: NeuralPolicy, comparisons: Comparisons) -> None:
        self.policy_, self.comparisons = policy, comparisons

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.policy_.parameters()

    def __call__(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        batch = select_comparisons(self.comparisons, rows)
        # one forward pass over chosen and rejected together, as TRL's concatenated forward
        both = Sequences.concat([batch.chosen, batch.rejected])
        return sequence_log_probs(self.policy_, both, None).split(len(rows))

    def policy(self) -> NeuralPolicy:
        return self.policy_


def _reference_log_probs(
    reference: TabularPolicy | NeuralPolicy,
    seqs: Sequences,
    dynamics: Dynamics,
    batch_size: int = 256,
) -> Tensor:
    """[N] log pi_ref of each sequence, without gradients, in chunks."""
    with torch.no_grad():
        parts = [
            sequence_log_probs(reference, seqs[i : i + batch_size], dynamics).double().cpu()
            for i in range(0, seqs.batch_size, batch_size)
        ]
    return torch.cat(parts)


def train_dpo(
    policy: TabularPolicy | NeuralPolicy,
    reference: TabularPolicy | NeuralPolicy,
    comparisons: Comparisons,
    dynamics: Dynamics,
    config: DPOConfig = DPOConfig(),
    generator: torch.Generator | None = None,
) -> Trained[TabularPolicy | NeuralPolicy, None]:
    """DPO from `policy` (a TabularPolicy to start from, or a neural policy trained in place)
    against `reference`. Returns the policy and one metric record per step."""
    if len(comparisons) == 0:
        raise ValueError("DPO needs at least one comparison")
    generator = generator or torch.Generator().manual_seed(0)
    tabular = isinstance(policy, TabularPolicy)
    scorer: _TabularScorer | _NeuralScorer
    if isinstance(policy, TabularPolicy):
        scorer = _TabularScorer(cast(TabularDynamics, dynamics), policy, comparisons)
    else:
        scorer = _NeuralScorer(policy, comparisons)
        policy.train()
    ref_chosen = _reference_log_probs(reference, comparisons.chosen, dynamics)  # (N,)
    ref_rejected = _reference_log_probs(reference, comparisons.rejected, dynamics)
    # The logits table keeps torch's unfused update (as it always has); a neural policy fuses.
    optimizer = adamw(scorer.parameters(), config.lr, config.weight_decay, fused=not tabular)
    n, records = len(comparisons), []
    for step in range(config.steps):
        full = config.batch_size is None or config.batch_size >= n
        rows = (
            torch.arange(n)
            if full or config.batch_size is None  # (full when None)
            else torch.randint(n, (config.batch_size,), generator=generator)
        )
        chosen, rejected = scorer(rows)  # (B,) sequence log-probs under the learner
        loss, metrics = losses.dpo(
            chosen,
            rejected,
            ref_chosen[rows].to(chosen),
            ref_rejected[rows].to(chosen),
            config.beta,
            config.label_smoothing,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(scorer.parameters(), config.max_grad_norm)
        optimizer.step()
        records.append({"step": step, **metrics})
    if not isinstance(policy, TabularPolicy):
        policy.eval()
    return Trained(scorer.policy(), records, None)
