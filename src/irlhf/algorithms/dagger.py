"""DAgger: the expert relabels the states the learner's own roll-outs visit, and the data set grows.

Ross, Gordon & Bagnell (2011), Algorithm 3.1: fit pi_hat_1 to the demonstrations (behaviour
cloning); in round r roll out the mixture pi_r = beta_r pi* + (1 - beta_r) pi_hat_r, ask the
expert for a label at every visited state, *aggregate* the labels with all earlier ones and refit
pi_hat_{r+1} on the union. The mixture is per step: at each step the expert's action is taken
with probability beta_r (each such step is an `ExpertOracle` query), otherwise the learner's;
beta_r = beta0 * beta_decay^(r - 1) (Ross et al.: beta_1 = 1 then 0 also works; the default here
starts at 0.5 and halves). Labels are hard (a sampled expert token, as in the paper) or soft (the
expert's distribution, fitted by the generalized JSD): soft-label DAgger still aggregates, which
is what separates it from on-policy distillation (`irlhf.algorithms.gkd`, nothing aggregated).
Every query — each expert step of a roll-out and each label — counts against the oracle's budget.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from irlhf.algorithms.optim import adamw
from irlhf.algorithms.result import Learner, Trained
from irlhf.algorithms.sft import (
    SFTConfig,
    demonstration_labels,
    fit_neural,
    fit_tabular,
)
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Dynamics, NeuralPolicy, TabularDynamics
from irlhf.types import ExpertLabels, Sequences
from irlhf.worlds.base import Demonstrations, ExpertOracle


class DAggerConfig(BaseModel):
    """DAgger (the `[dagger]` table of an experiment config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    rounds: int = Field(8, ge=0)
    """Relabelling rounds after the initial behaviour-cloning fit."""
    rollouts_per_round: int = Field(50, ge=1)
    """Sequences labelled by the oracle per round."""
    labels: Literal["hard", "soft"] = "hard"
    """"hard" (a sampled expert token, as in Ross et al.) or "soft" (the expert's distribution,
    fitted by the generalized JSD; still aggregated, unlike GKD)."""
    beta0: float = Field(0.5, ge=0.0, le=1.0)
    """Round 1's per-step probability of taking the expert's action in the roll-outs."""
    beta_decay: float = Field(0.5, ge=0.0, le=1.0)
    """beta_r = beta0 * beta_decay^(r - 1)."""
    fit: SFTConfig = SFTConfig()
    """How each round refits (tabular smoothing; neural steps, lr, jsd_beta)."""

    def beta(self, round_: int) -> float:
        """The expert's per-step weight in round `round_`'s mixture roll-outs (1-based)."""
        return self.beta0 * self.beta_decay ** (round_ - 1)

    def expected_queries(self, horizon: int) -> float:
        """Oracle queries expected over all rounds: every roll-out position is labelled, and
        a fraction beta_r of them was an expert step (plus, with soft labels, round 0's
        relabelled demonstrations, which depend on their number: not included)."""
        steps = self.rollouts_per_round * horizon
        return sum(steps * (1 + self.beta(r)) for r in range(1, self.rounds + 1))


def train_dagger(
    policy: Learner,
    demos: Demonstrations,
    oracle: ExpertOracle,
    dynamics: Dynamics,
    config: DAggerConfig = DAggerConfig(),
    generator: torch.Generator | None = None,
) -> Trained[Learner, None]:
    """`policy` is a TabularPolicy (shape only; `dynamics` must then be tabular: states and
    transitions) or a neural policy trained in place; `dynamics` gives prompts."""
    generator = generator or torch.Generator().manual_seed(0)
    tabular = isinstance(policy, TabularPolicy)
    soft = config.labels == "soft"
    # one optimiser for every round (Adam's moments carry over), built as `fit_neural` builds
    # its own
    fit = config.fit
    optimizer = (
        None
        if tabular
        else adamw(cast(NeuralPolicy, policy).parameters(), fit.lr, fit.weight_decay)
    )

    def refit(dataset: list[ExpertLabels]) -> list[dict]:
        nonlocal policy
        if tabular:
            table = fit_tabular(dataset, cast(TabularDynamics, dynamics), config.fit.smoothing)
            policy = cast(Learner, table)
            return []
        return fit_neural(cast(NeuralPolicy, policy), dataset, config.fit, generator, optimizer)

    # Round 0: behaviour cloning (soft mode relabels the demonstrations with the expert).
    dataset = [oracle.label(demos.sequences, soft=True) if soft else demonstration_labels(demos)]
    records = [{"round": 0, **r} for r in refit(dataset)]
    for round_ in range(1, config.rounds + 1):
        beta = config.beta(round_)
        seqs, expert_steps = mixture_rollout(
            policy, oracle, dynamics, config.rollouts_per_round, beta, generator
        )
        dataset.append(oracle.label(seqs, soft=soft, generator=generator))
        records += [{"round": round_, **r} for r in refit(dataset)]
        records.append(
            {
                "round": round_,
                "oracle/queries": oracle.queries,
                "dagger/beta": beta,
                "dagger/expert_step_fraction": float(expert_steps.float().mean()),
            }
        )
    return Trained(policy, records, None)


def mixture_rollout(
    policy: TabularPolicy | NeuralPolicy,
    oracle: ExpertOracle,
    dynamics: Dynamics,
    n: int,
    beta: float,
    generator: torch.Generator,
) -> tuple[Sequences, torch.Tensor]:
    """n roll-outs of beta pi* + (1 - beta) pi_hat, mixed per step: with probability beta the
    expert's action (an oracle query), else the learner's. Returns the sequences and a
    [n, horizon] bool mask of the expert's steps.

    The learner's distribution at each step comes from the latent state (a table) or from its
    own KV-cached sampler (a neural policy, whose drawn token is replaced by the expert's on the
    expert's steps: `steer`). beta = 0 takes the learner's own sampler."""
    horizon = dynamics.horizon
    if beta == 0.0:
        if isinstance(policy, TabularPolicy):
            seqs = cast(TabularDynamics, dynamics).rollout(policy, n, generator)
        else:
            prompts = dynamics.sample_prompts(n, generator).to(policy.device)
            seqs = policy.sample(prompts, horizon, generator)
        return seqs.to("cpu"), torch.zeros(n, horizon, dtype=torch.bool)
    prompts = dynamics.sample_prompts(n, generator)
    P = prompts.shape[1]
    tokens = torch.empty(n, P + horizon, dtype=torch.long)
    tokens[:, :P] = prompts
    expert_steps = torch.rand(n, horizon, generator=generator) < beta  # (n, horizon)

    def expert_or(t: int, drawn: Tensor) -> Tensor:
        """The token at step t: the expert's where it acts, else the learner's `drawn`."""
        prefix = Sequences.from_prompt_and_completion(prompts, tokens[:, P : P + t])
        expert = oracle.act(prefix, expert_steps[:, t], generator)
        tokens[:, P + t] = torch.where(expert_steps[:, t], expert, drawn.cpu())
        return tokens[:, P + t].to(drawn.device)

    if isinstance(policy, TabularPolicy):
        state = prompts[:, 0] - dynamics.vocab_size
        for t in range(horizon):
            drawn = torch.multinomial(policy.probs[state], 1, generator=generator).squeeze(1)
            state = cast(TabularDynamics, dynamics).transition[state, expert_or(t, drawn)]
    else:
        policy.sample(prompts.to(policy.device), horizon, generator, steer=expert_or)
    return Sequences.from_prompt_and_completion(prompts, tokens[:, P:]), expert_steps
