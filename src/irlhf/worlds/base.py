"""The World protocol and the feedback channels algorithms are allowed to see.

Algorithms never receive a World's ground truth. They receive a channel — `Demonstrations`,
`ExpertOracle` (and, for RLHF, an `Annotator`) — whose use is counted against a budget, so methods
are compared at equal feedback cost. They may use the dynamics (`sample_prompts`, `states`),
as the essay's IRL does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor

from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy, TabularDynamics, World
from irlhf.types import ExpertLabels, Sequences

__all__ = ["BudgetExceeded", "Demonstrations", "ExpertOracle", "World", "rollout"]


class BudgetExceeded(RuntimeError):
    """A feedback channel was asked for more than its budget."""


def rollout(
    world: World,
    policy: TabularPolicy | Policy,
    n: int,
    generator: torch.Generator,
    horizon: int | None = None,
) -> Sequences:
    """n sequences from `policy` in `world`: tabular policies act on latent states, neural ones
    on tokens (prompts from the world's start distribution)."""
    horizon = world.horizon if horizon is None else horizon
    if hasattr(world, "rollout") and hasattr(policy, "probs"):  # an automaton, a tabular policy
        tabular = cast(TabularDynamics, world)
        return tabular.rollout(cast(TabularPolicy, policy), n, generator, horizon)
    prompts = world.sample_prompts(n, generator)
    return cast(Policy, policy).sample(prompts, max_new_tokens=horizon, generator=generator)


@dataclass
class Demonstrations:
    """N sequences from the demonstrator: the expert at sampling `temperature`, mixed with
    uniform noise with weight `epsilon`. `sequences` is all an imitation learner sees."""

    sequences: Sequences
    temperature: float
    epsilon: float

    @staticmethod
    def collect(
        world: World,
        n: int,
        generator: torch.Generator,
        temperature: float = 1.0,
        epsilon: float = 0.0,
        horizon: int | None = None,
    ) -> Demonstrations:
        if n < 1:
            raise ValueError(f"n_demonstrations must be >= 1 (got {n})")
        if temperature < 0:
            raise ValueError(f"demo_temperature must be >= 0 (got {temperature})")
        demonstrator = world.demonstrator(temperature, epsilon)
        return Demonstrations(
            rollout(world, demonstrator, n, generator, horizon), temperature, epsilon
        )

    @property
    def n(self) -> int:
        return self.sequences.batch_size

    @property
    def n_tokens(self) -> int:
        return int(self.sequences.completion_mask.sum().item())

    def state_actions(self, dynamics: TabularDynamics) -> tuple[Tensor, Tensor]:
        """The demonstrations as (state, action) pairs for tabular consumers (another
        library's behaviour cloning or IRL): two [N] long tensors over every completion token,
        the latent state it was chosen in (from the automaton's `dynamics.states`) and the
        token. Tokens < dynamics.vocab_size are actions; the prompt token (vocab_size + start
        state) is not a pair."""
        seqs = self.sequences
        mask = seqs.completion_mask
        return dynamics.states(seqs)[mask], seqs.tokens[mask]


@dataclass
class ExpertOracle:
    """The expert's next-token distribution at any prefix: one query per prefix and call,
    whatever is taken from it (the distribution as a soft label, a token sampled from it as a
    hard label or as the expert's action in a mixture roll-out; DAgger's expert step and its
    later label of the same prefix are two queries). Queries count
    against `budget` (None = unlimited).

    `temperature` and `epsilon` degrade the oracle like the demonstrator (the defaults are the
    expert itself): DAgger "imitating the same demonstrator" queries the demonstrator. Nothing is
    returned at a position that was not charged: labels outside the labelled positions are zero
    (soft) or -1 (hard)."""

    world: World
    budget: int | None = None
    temperature: float = 1.0
    epsilon: float = 0.0
    queries: int = field(default=0, init=False)

    def label(
        self,
        seqs: Sequences,
        soft: bool,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> ExpertLabels:
        """Label the completion positions of `seqs` (or those of them in `mask`)."""
        mask = seqs.completion_mask if mask is None else mask & seqs.completion_mask
        if not soft and generator is None:
            raise ValueError("hard labels are sampled: pass a torch.Generator")
        self._charge(int(mask.sum().item()))
        probs = self._teacher_probs(seqs) * mask.unsqueeze(-1)  # (B, T, V), 0 where not asked
        if soft:
            return ExpertLabels(seqs, mask, probs=probs)
        flat = probs.reshape(-1, probs.shape[-1]).float()
        flat[~mask.reshape(-1), 0] = 1.0  # a placeholder row, overwritten by -1 below
        actions = torch.multinomial(flat, 1, generator=generator).view(seqs.tokens.shape)
        return ExpertLabels(seqs, mask, actions=actions.masked_fill_(~mask, -1))

    def act(self, prefixes: Sequences, rows: Tensor, generator: torch.Generator) -> Tensor:
        """[B] long: the expert's next token after each prefix where `rows` ([B] bool) is set,
        sampled from its distribution (-1 elsewhere); one query per such row. Prefixes are
        equal-length sequences without padding (a roll-out in progress)."""
        if rows.shape != (prefixes.batch_size,) or rows.dtype != torch.bool:
            raise ValueError(f"rows must be [{prefixes.batch_size}] bool, got {tuple(rows.shape)}")
        tokens = torch.full((prefixes.batch_size,), -1, dtype=torch.long)
        n = int(rows.sum().item())
        if n == 0:
            return tokens
        self._charge(n)
        probs = self.world.next_demonstrator_probs(prefixes[rows], self.temperature, self.epsilon)
        probs = probs.float()  # (n, V)
        tokens[rows] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return tokens

    def generate(
        self, n: int, generator: torch.Generator, horizon: int | None = None
    ) -> ExpertLabels:
        """n sequences sampled from the (degraded) expert, with its distributions as soft labels:
        one query per generated position (sampling and labelling read the same distribution).
        GKD's `seq_kd` uses this."""
        horizon = self.world.horizon if horizon is None else horizon
        seqs = rollout(self.world, self.world.demonstrator(self.temperature, self.epsilon), n,
                       generator, horizon).to("cpu")  # fmt: skip
        # an LM demonstrator samples under inference mode: clones are usable in a training step
        seqs = Sequences(
            seqs.tokens.clone(), seqs.prompt_mask.clone(), seqs.completion_mask.clone()
        )
        return self.label(seqs, soft=True)

    def _charge(self, n: int) -> None:
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExceeded(
                f"expert oracle budget {self.budget} exceeded: {self.queries} used, {n} asked"
            )
        self.queries += n

    def _teacher_probs(self, seqs: Sequences) -> Tensor:
        return self.world.demonstrator_probs(seqs, self.temperature, self.epsilon)
