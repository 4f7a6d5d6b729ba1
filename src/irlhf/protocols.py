"""The interfaces algorithms, metrics and worlds program against, in one place.

`Dynamics` is what an algorithm may know of a world (sizes, horizon, prompts); the automaton's
dynamics add its latent states and transitions (`TabularDynamics`). `World` adds the ground
truth that only metrics and feedback channels read. `Policy` is what roll-outs and metrics call
on a neural policy (a learner, a degraded expert, greedy decoding); `NeuralPolicy` adds what
training calls (parameters, train/eval, log-probs, logits with hidden states).

Structural types only: this module imports nothing of the package but data types (under
TYPE_CHECKING, the tabular policy), so any layer may use it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from irlhf.types import Sequences

if TYPE_CHECKING:
    from irlhf.policies.sampling import Steer
    from irlhf.policies.tabular import TabularPolicy


class Dynamics(Protocol):
    """What an algorithm may know of any world: sizes, horizon and the prompt distribution."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def token_vocab_size(self) -> int: ...
    @property
    def horizon(self) -> int: ...
    def sample_prompts(self, n: int, generator: torch.Generator) -> Tensor: ...


class TabularDynamics(Dynamics, Protocol):
    """An automaton's dynamics: its latent states, transitions and a tabular roll-out."""

    @property
    def n_states(self) -> int: ...
    @property
    def transition(self) -> Tensor: ...
    def states(self, seqs: Sequences) -> Tensor: ...
    def rollout(
        self, policy: TabularPolicy, n: int, generator: torch.Generator, horizon: int | None = None
    ) -> Sequences: ...


class Policy(Protocol):
    """What roll-outs and metrics call on a neural policy: its device, its next-token logits
    (position t: token t given tokens < t) and sampling."""

    @property
    def device(self) -> torch.device: ...
    def next_token_logits(self, seqs: Sequences) -> Tensor: ...
    def sample(
        self, prompts: Tensor, max_new_tokens: int, generator: torch.Generator
    ) -> Sequences: ...


class NeuralPolicy(Policy, Protocol):
    """What training calls on a neural policy (CausalLMPolicy is the one implementation)."""

    @property
    def action_vocab_size(self) -> int: ...
    def parameters(self) -> Iterator[nn.Parameter]: ...
    def train(self, mode: bool = True) -> NeuralPolicy: ...
    def eval(self) -> NeuralPolicy: ...
    def log_probs(self, seqs: Sequences) -> Tensor: ...
    def sample(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        generator: torch.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        steer: Steer | None = None,
    ) -> Sequences: ...
    def action_logits(
        self, seqs: Sequences, start: int = 0, end: int | None = None, hidden: bool = False
    ) -> tuple[Tensor, Tensor | None]: ...
    def sample_with_log_probs(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        generator: torch.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
    ) -> tuple[Sequences, Tensor]: ...


class RewardModel(Protocol):
    """A learned reward: one scalar per sequence (what RLHF optimises and metrics evaluate)."""

    def score(self, seqs: Sequences) -> Tensor: ...


class World(Dynamics, Protocol):
    """What every world provides. `true_rewards` is for metrics only."""

    def expert_probs(self, seqs: Sequences) -> Tensor: ...
    def true_rewards(self, seqs: Sequences) -> Tensor: ...
    def true_return(self, seqs: Sequences) -> Tensor: ...
    def dynamics(self) -> Dynamics: ...
    def demonstrator(
        self, temperature: float = 1.0, epsilon: float = 0.0
    ) -> TabularPolicy | Policy: ...
    def demonstrator_probs(
        self, seqs: Sequences, temperature: float = 1.0, epsilon: float = 0.0
    ) -> Tensor: ...
    def next_demonstrator_probs(
        self, prefixes: Sequences, temperature: float = 1.0, epsilon: float = 0.0
    ) -> Tensor: ...
