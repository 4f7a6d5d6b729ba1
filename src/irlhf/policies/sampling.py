"""Drawing tokens from next-token logits: temperature, top-k, nucleus (top-p, Holtzman et al.
2020) and greedy decoding, shared by both samplers of `CausalLMPolicy` (the Hugging Face cached
loop and `LeanGPT2.sample`), optionally mixed with uniform noise (an acting error).

Each token is drawn by inverting the CDF with one uniform number per row (`draw`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Steer = Callable[[int, Tensor], Tensor]
"""`steer(step, drawn)`: the tokens [B] to append at new-token `step` instead of the drawn
ones [B] (a sampler's hook for interventions such as DAgger's expert steps)."""


@dataclass(frozen=True)
class Decoding:
    """How each new token is drawn: temperature, then top-k, then top-p (HF's order), or the
    argmax with `greedy` (temperature and filters are then ignored); then, with `epsilon` > 0,
    the result is mixed with the uniform distribution over all tokens, (1 - epsilon) p +
    epsilon / A (a policy's acting error, `CausalLMPolicy.act_epsilon`). Raises ValueError for
    arguments that define no distribution."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    epsilon: float = 0.0

    def __post_init__(self) -> None:
        if not (self.greedy or self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (self.top_k is None or self.top_k >= 1):
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not (self.top_p is None or 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.epsilon < 1:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon}")


def mix_uniform(log_probs: Tensor, epsilon: float) -> Tensor:
    """log((1 - epsilon) p + epsilon / A) from log p (..., A): normalised log-probs (valid
    logits) of p mixed with the uniform distribution; `log_probs` itself at epsilon = 0."""
    if epsilon == 0:
        return log_probs
    A = log_probs.shape[-1]
    floor = log_probs.new_tensor(math.log(epsilon / A))
    return torch.logaddexp(log_probs + math.log1p(-epsilon), floor)


def draw(
    logits: Tensor, generator: torch.Generator | Sequence[torch.Generator], decoding: Decoding
) -> tuple[Tensor, Tensor]:
    """One token per row of logits (B, A), drawn as `decoding` says.

    With G generators (an ensemble's members, `irlhf.policies.ensemble`) the rows are G equal
    consecutive groups and group g's uniforms come from generator g: each group gets the tokens
    that `draw` of its rows alone with its generator gives.

    Returns the tokens (B,) and their log-probs (B,) under the filtered (and mixed)
    distribution (0 if greedy without epsilon).
    """
    if decoding.greedy:
        best = logits.argmax(dim=-1)
        if decoding.epsilon == 0:
            return best, torch.zeros_like(logits[:, 0])
        # the argmax as a one-hot distribution, mixed below
        hot = torch.nn.functional.one_hot(best, logits.shape[-1]).bool()
        logits = torch.zeros_like(logits).masked_fill(~hot, float("-inf"))
        decoding = Decoding(epsilon=decoding.epsilon)
    temperature, top_k, top_p = decoding.temperature, decoding.top_k, decoding.top_p
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, A)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token once the tokens ranked above it hold >= top_p; the top token always stays
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    log_probs = mix_uniform(logits.log_softmax(dim=-1), decoding.epsilon)  # (B, A)
    # inverse CDF: the token whose cumulative-probability interval holds u ~ U(0, total); one
    # uniform per row (torch.multinomial draws one exponential per vocabulary entry). u stays
    # below the total, so a filtered (zero-probability) token, whose interval is empty, is never
    # picked, not even the last one after rounding.
    cdf = log_probs.exp().cumsum(dim=-1)  # (B, A)
    total = cdf[:, -1:]
    u = _uniforms(total.shape[0], generator, logits.device) * total
    u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))
    token = torch.searchsorted(cdf, u, right=True)  # (B, 1)
    return token.squeeze(-1), log_probs.gather(-1, token).squeeze(-1)


def _uniforms(
    B: int, generator: torch.Generator | Sequence[torch.Generator], device: torch.device
) -> Tensor:
    """(B, 1) uniforms on [0, 1): from one generator, or B / G rows from each of G in turn."""
    if isinstance(generator, torch.Generator):
        return torch.rand((B, 1), generator=generator, device=device)
    G = len(generator)
    if G == 0 or B % G:
        raise ValueError(f"{B} rows do not split into {G} generators' equal groups")
    return torch.cat([torch.rand((B // G, 1), generator=g, device=device) for g in generator])
