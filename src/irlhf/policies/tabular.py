"""A tabular policy: a softmax table over the automaton's latent states.

Every quantity about a tabular policy (occupancy, return, divergence from the expert) is computed
exactly by dynamic programming in `irlhf.metrics.exposure`; this module only holds the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class TabularPolicy:
    """pi(a | s) as a table.

    probs: [n_states, vocab_size] float64, every row a probability distribution (a numpy
           array or nested list is converted; a tensor with gradients is refused).
    """

    probs: Tensor

    def __post_init__(self) -> None:
        # accept what a user of another library holds: a numpy array or a list of rows becomes
        # a float64 tensor; a table that carries gradients is refused here (exact metrics take
        # no gradient, and it would fail deep inside the occupancy's sparse product instead)
        if not isinstance(self.probs, Tensor):
            try:
                table = torch.as_tensor(np.asarray(self.probs, dtype=np.float64))
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"probs must be a [n_states, vocab_size] tensor or array, got "
                    f"{type(self.probs).__name__} ({error})"
                ) from None
            object.__setattr__(self, "probs", table)
        if self.probs.requires_grad:
            raise ValueError(
                "probs carries gradients: pass probs.detach() (a tabular policy is a fixed table)"
            )
        if self.probs.dim() != 2:
            raise ValueError(f"probs must be [n_states, vocab_size], got {tuple(self.probs.shape)}")
        if not self.probs.is_floating_point():
            raise ValueError(f"probs must be floating point, got {self.probs.dtype}")
        row_sums = self.probs.sum(dim=1)
        if bool((self.probs < 0).any()) or not torch.allclose(
            row_sums, torch.ones_like(row_sums), atol=1e-6
        ):
            raise ValueError("probs rows must be non-negative and sum to 1")

    @property
    def n_states(self) -> int:
        return self.probs.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.probs.shape[1]

    @staticmethod
    def from_logits(logits: Tensor) -> TabularPolicy:
        """softmax over the last dimension of a [n_states, vocab_size] table."""
        return TabularPolicy(torch.softmax(logits.double(), dim=-1))

    @staticmethod
    def uniform(n_states: int, vocab_size: int) -> TabularPolicy:
        return TabularPolicy(
            torch.full((n_states, vocab_size), 1.0 / vocab_size, dtype=torch.float64)
        )

    def log_probs(self) -> Tensor:
        """[n_states, vocab_size] log pi(a|s) (-inf where pi is 0)."""
        return self.probs.log()

    def mix(self, other: TabularPolicy, weight_other: float) -> TabularPolicy:
        """(1 - w) * self + w * other, the per-step mixture DAgger rolls out."""
        if not 0.0 <= weight_other <= 1.0:
            raise ValueError(f"mixing weight must be in [0, 1], got {weight_other}")
        return TabularPolicy((1 - weight_other) * self.probs + weight_other * other.probs)

    def with_temperature(self, temperature: float) -> TabularPolicy:
        """pi^(1/T) renormalised; temperature 0 is the greedy (argmax, ties split) policy."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if temperature == 0:
            best = self.probs == self.probs.max(dim=1, keepdim=True).values
            return TabularPolicy(best.double() / best.sum(dim=1, keepdim=True))
        return TabularPolicy.from_logits(self.probs.clamp_min(1e-300).log() / temperature)

    def with_epsilon(self, epsilon: float) -> TabularPolicy:
        """(1 - eps) * pi + eps * uniform: the demonstrator's noise knob."""
        return self.mix(TabularPolicy.uniform(self.n_states, self.vocab_size), epsilon)

    def sample(self, states: Tensor, generator: torch.Generator) -> Tensor:
        """One action per state in `states` ([B] long) -> [B] long."""
        return torch.multinomial(self.probs[states], 1, generator=generator).squeeze(1)
