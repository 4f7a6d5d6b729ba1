"""On-policy distillation: Generalized Knowledge Distillation (GKD; Agarwal et al. 2024, Alg. 1).

Every optimiser step draws one batch: with probability `lmbda` fresh samples of the *current*
student (at `temperature`), otherwise a batch of the fixed data set (the demonstrations; with
`seq_kd`, fresh samples of the teacher instead). The teacher labels that batch with its full
next-token distribution and the student takes one step on the generalized JSD to it (`beta`:
0 = forward KL teacher || student, 1 = reverse KL). Nothing is aggregated: a student sample is
used for one step and discarded. This is what TRL's `GKDTrainer.training_step` does
(`random.random() <= lmbda` per step, `seq_kd` for teacher-generated outputs).

Feedback: the teacher is the `ExpertOracle`; each labelled position is one query. A fixed-data
sequence is labelled the first time it is drawn and its labels are kept (charged once), fresh
samples every time. Records: one per step (the loss's metrics) and, every `log_every` steps,
`gkd/on_policy_fraction` (the realised fraction of on-policy batches in that interval) and
`oracle/queries`.

Deviations from the paper and TRL, and why: the loss is at temperature 1 (TRL divides both
logits by the sampling temperature in the loss too; here `temperature` only shapes the student's
samples, so `temperature = 1` is GKD's on-policy distribution exactly); the per-step coin is
systematic rather than independent (`_SystematicCoin`: each step is still on-policy with
probability lmbda, but every run realises lmbda's share of on-policy steps, so arms and seeds
are not compared at different shares), drawn from the run's `torch.Generator` (not Python's
global `random`) and only when 0 < lmbda < 1, so that lmbda = 0 draws exactly the data batches
`sft.fit_neural` draws (GKD with lmbda = 0 is SFT on soft labels).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from irlhf.algorithms.optim import adamw
from irlhf.algorithms.result import Learner, Trained
from irlhf.algorithms.sft import label_step
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Dynamics, NeuralPolicy
from irlhf.types import ExpertLabels, Sequences
from irlhf.worlds.base import Demonstrations, ExpertOracle


class GKDConfig(BaseModel):
    """GKD (the `[gkd]` table of an experiment config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    steps: int = Field(300, ge=0)
    """Optimiser steps (one batch each)."""
    batch_size: int = Field(32, ge=1)
    """Sequences per step."""
    lr: float = Field(3e-3, gt=0.0)
    """AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    lmbda: float = Field(0.5, ge=0.0, le=1.0)
    """Probability that a step's batch is fresh student samples (GKD's lambda; 0 = supervised
    distillation on the fixed data, 1 = purely on-policy)."""
    beta: float = Field(0.5, ge=0.0, le=1.0)
    """Generalized-JSD beta (0 = forward KL teacher || student, 1 = reverse KL; TRL's 0.5)."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature of the student's on-policy batches."""
    seq_kd: bool = False
    """Off-policy batches are fresh teacher samples instead of the fixed demonstrations."""
    log_every: int = Field(20, ge=1)
    """Steps per `gkd/on_policy_fraction` record."""

    def expected_queries(self, n_demonstrations: int, horizon: int) -> float:
        """The oracle queries this config is expected to use: on-policy (and seq_kd) batches are
        labelled every step, the fixed data at most once per sequence (an upper bound)."""
        on_policy = self.lmbda * self.steps * self.batch_size * horizon
        off = (1 - self.lmbda) * self.steps * self.batch_size
        data = off * horizon if self.seq_kd else min(off, n_demonstrations) * horizon
        return on_policy + data


def train_gkd(
    policy: Learner,
    demos: Demonstrations,
    oracle: ExpertOracle,
    dynamics: Dynamics,
    config: GKDConfig = GKDConfig(),
    generator: torch.Generator | None = None,
) -> Trained[Learner, None]:
    """GKD of a neural student (trained in place) from the `oracle` teacher (a TabularPolicy is
    refused)."""
    if isinstance(policy, TabularPolicy):
        raise ValueError(
            "GKD trains a neural student by gradient steps; a table's on-policy analogue is "
            "DAgger with soft labels (algorithm = dagger, dagger.labels = soft)"
        )
    generator = generator or torch.Generator().manual_seed(0)
    params = list(policy.parameters())
    optimizer = adamw(params, config.lr, config.weight_decay)
    data = _LabelledOnFirstUse(demos.sequences, oracle)
    records, on_policy_steps = [], 0
    coin = _SystematicCoin(config.lmbda, generator)
    policy.train()
    for step in range(config.steps):
        on_policy = coin.flip()
        if on_policy:
            batch = oracle.label(_student_samples(policy, dynamics, config, generator), soft=True)
        elif config.seq_kd:
            batch = oracle.generate(config.batch_size, generator, dynamics.horizon)
        else:
            picks = torch.randint(demos.n, (config.batch_size,), generator=generator)
            batch = data.rows(picks)
        metrics = label_step(policy, batch, optimizer, params, config.beta)
        records.append({"step": step, **metrics})
        on_policy_steps += on_policy
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            interval = (step % config.log_every) + 1
            records.append(
                {
                    "step": step,
                    "gkd/on_policy_fraction": on_policy_steps / interval,
                    "oracle/queries": oracle.queries,
                }
            )
            on_policy_steps = 0
    policy.eval()
    return Trained(policy, records, None)


class _SystematicCoin:
    """Step i is on-policy iff floor((i + 1) lmbda + u) > floor(i lmbda + u), with one
    u ~ U(0, 1) per run: systematic sampling. Each step is on-policy with probability exactly
    lmbda, as with GKD's per-step coin, and the realised fraction over any n steps is within
    1 / n of lmbda (independent coins would give a binomial spread, sd 0.035 over 200 steps at
    lmbda = 0.5: a different on-policy share per arm and seed). No draw at lmbda 0 or 1."""

    def __init__(self, lmbda: float, generator: torch.Generator) -> None:
        self.lmbda, self.step = lmbda, 0
        self.phase = float(torch.rand((), generator=generator)) if 0.0 < lmbda < 1.0 else 0.0

    def flip(self) -> bool:
        i, self.step = self.step, self.step + 1
        return math.floor((i + 1) * self.lmbda + self.phase) > math.floor(
            i * self.lmbda + self.phase
        )


def _student_samples(
    policy: NeuralPolicy, dynamics: Dynamics, config: GKDConfig, generator: torch.Generator
) -> Sequences:
    prompts = dynamics.sample_prompts(config.batch_size, generator).to(policy.device)
    # `sample` runs under inference mode and returns normal tensors, usable in the step; the
    # oracle labels on the CPU (the world's tables and expert live there)
    seqs = policy.sample(prompts, dynamics.horizon, generator, temperature=config.temperature)
    return seqs.to("cpu")


class _LabelledOnFirstUse:
    """The fixed data set's soft labels, asked of the oracle the first time a sequence is drawn
    (one query per completion position, once) and kept."""

    def __init__(self, seqs: Sequences, oracle: ExpertOracle) -> None:
        self.seqs, self.oracle = seqs, oracle
        self.labelled = torch.zeros(seqs.batch_size, dtype=torch.bool)
        self.probs: torch.Tensor | None = None  # (N, T, V), allocated at the first label

    def rows(self, picks: torch.Tensor) -> ExpertLabels:
        new = picks[~self.labelled[picks]].unique()
        if len(new):
            probs = self.oracle.label(self.seqs[new], soft=True).probs
            assert probs is not None  # soft labels
            if self.probs is None:
                shape = (self.seqs.batch_size, *probs.shape[1:])
                self.probs = probs.new_zeros(shape)
            self.probs[new] = probs
            self.labelled[new] = True
        assert self.probs is not None  # every pick is labelled
        seqs = self.seqs[picks]
        return ExpertLabels(seqs, seqs.completion_mask, probs=self.probs[picks])
