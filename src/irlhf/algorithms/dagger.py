"""DAgger and on-policy distillation: the expert relabels the learner's own prefixes.

DAgger (Ross, Gordon & Bagnell 2011): start from behaviour cloning on the demonstrations; each
round, roll out a mixture of expert-side data and the current learner, ask the `ExpertOracle` for
a label at every visited prefix, aggregate, refit. The mixture is per sequence: a fraction
beta_r = beta0 * beta_decay^(r-1) of round r's sequences is redrawn from the demonstrations, the
rest are the learner's rollouts (Ross et al. note beta_1 = 1, beta_r = 0 later works well).

With soft labels this is on-policy distillation (GKD, Agarwal et al. 2024): the loss is the
generalized JSD to the expert's next-token distribution and `lmbda` — the fraction of
learner-generated sequences — replaces the beta schedule (beta_r = 1 - lmbda).
Every label counts against the oracle's budget.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from irlhf.algorithms.sft import (
    SFTConfig,
    adamw,
    demonstration_labels,
    fit_neural,
    fit_tabular,
)
from irlhf.policies.tabular import TabularPolicy
from irlhf.types import ExpertLabels, Sequences
from irlhf.worlds.base import Demonstrations, ExpertOracle


class DAggerConfig(BaseModel):
    """DAgger / on-policy distillation (the `[dagger]` table of an experiment config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    rounds: int = Field(8, ge=0)
    """Relabelling rounds after the initial behaviour-cloning fit."""
    rollouts_per_round: int = Field(50, ge=1)
    """Sequences labelled by the oracle per round."""
    labels: Literal["hard", "soft"] = "hard"
    """"hard" (a sampled expert token, DAgger) or "soft" (the expert distribution, GKD)."""
    beta0: float = Field(0.5, ge=0.0, le=1.0)
    """Fraction of round 1's sequences drawn from the demonstrations instead of the learner."""
    beta_decay: float = Field(0.5, ge=0.0, le=1.0)
    """beta_r = beta0 * beta_decay^(r - 1)."""
    lmbda: float | None = Field(None, ge=0.0, le=1.0)
    """GKD's fraction of learner-generated sequences; when set, beta_r = 1 - lmbda every round."""
    fit: SFTConfig = SFTConfig()
    """How each round refits (tabular smoothing; neural steps, lr, jsd_beta)."""

    def beta(self, round_: int) -> float:
        """The demonstration fraction of round `round_` (1-based)."""
        if self.lmbda is not None:
            return 1.0 - self.lmbda
        return self.beta0 * self.beta_decay ** (round_ - 1)


def train_dagger(
    policy,
    demos: Demonstrations,
    oracle: ExpertOracle,
    dynamics,
    config: DAggerConfig = DAggerConfig(),
    generator: torch.Generator | None = None,
):
    """Returns (policy, records). `policy` is a TabularPolicy (shape only) or a neural policy
    trained in place; `dynamics` gives prompts, states and tabular rollouts."""
    generator = generator or torch.Generator().manual_seed(0)
    tabular = isinstance(policy, TabularPolicy)
    soft = config.labels == "soft"
    # one optimiser for every round (Adam's moments carry over), built as `fit_neural` builds
    # its own: fused AdamW with the fit's weight decay (torch's default 0.01 used to apply here)
    fit = config.fit
    optimizer = None if tabular else adamw(policy.parameters(), fit.lr, fit.weight_decay)

    def refit(dataset: list[ExpertLabels]) -> list[dict]:
        nonlocal policy
        if tabular:
            policy = fit_tabular(dataset, dynamics, config.fit.smoothing)
            return []
        return fit_neural(policy, dataset, config.fit, generator, optimizer)

    # Round 0: behaviour cloning (soft mode relabels the demonstrations with the expert).
    dataset = [oracle.label(demos.sequences, soft=True) if soft else demonstration_labels(demos)]
    records = [{"round": 0, **r} for r in refit(dataset)]
    for round_ in range(1, config.rounds + 1):
        n_demo = round(config.beta(round_) * config.rollouts_per_round)
        seqs = _learner_rollouts(policy, dynamics, config.rollouts_per_round - n_demo, generator)
        if n_demo:
            picks = torch.randint(demos.n, (n_demo,), generator=generator)
            seqs = Sequences.concat([s for s in (seqs, demos.sequences[picks]) if s is not None])
        dataset.append(oracle.label(seqs, soft=soft, generator=generator))
        fit_records = refit(dataset)
        records += [{"round": round_, **r} for r in fit_records]
        records.append(
            {"round": round_, "oracle/queries": oracle.queries, "dagger/beta": config.beta(round_)}
        )
    return policy, records


def _learner_rollouts(policy, dynamics, n: int, generator: torch.Generator) -> Sequences | None:
    if n == 0:
        return None
    if isinstance(policy, TabularPolicy):
        return dynamics.rollout(policy, n, generator)
    prompts = dynamics.sample_prompts(n, generator).to(policy.device)
    with torch.inference_mode():
        return policy.sample(prompts, max_new_tokens=dynamics.horizon, generator=generator).to(
            "cpu"
        )
