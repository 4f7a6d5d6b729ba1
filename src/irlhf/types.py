"""Frozen, shape-checked containers for what flows between worlds, channels and algorithms.

One mask convention everywhere: `completion_mask` marks the tokens a policy generated (and is
trained or scored on); `prompt_mask` marks the tokens it was given; padding is neither. Labels
and log-probs are aligned with tokens: position t is about token t given tokens < t.
Modelled on HumanCompatibleAI/imitation's `data/types.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class Sequences:
    """A batch of token sequences.

    tokens:          [B, T] long, token ids (padding positions hold any valid id, usually 0)
    prompt_mask:     [B, T] bool, True on prompt tokens
    completion_mask: [B, T] bool, True on generated tokens; never overlaps prompt_mask
    """

    tokens: Tensor
    prompt_mask: Tensor
    completion_mask: Tensor

    def __post_init__(self) -> None:
        _check(self.tokens.dim() == 2, f"tokens must be [B, T], got {tuple(self.tokens.shape)}")
        _check(self.tokens.dtype == torch.long, f"tokens must be long, got {self.tokens.dtype}")
        for name in ("prompt_mask", "completion_mask"):
            mask = getattr(self, name)
            _check(
                mask.shape == self.tokens.shape,
                f"{name} must match tokens {tuple(self.tokens.shape)}, got {tuple(mask.shape)}",
            )
            _check(mask.dtype == torch.bool, f"{name} must be bool, got {mask.dtype}")
        _check(
            not bool((self.prompt_mask & self.completion_mask).any()),
            "prompt_mask and completion_mask overlap",
        )

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    @property
    def prompt_length(self) -> int:
        """Length of the (left-aligned, equal-length) prompt: the first completion position."""
        return int(self.prompt_mask.sum(dim=1).max().item()) if self.batch_size else 0

    def __len__(self) -> int:
        return self.batch_size

    def __getitem__(self, index: slice | Tensor | list[int]) -> Sequences:
        return Sequences(self.tokens[index], self.prompt_mask[index], self.completion_mask[index])

    def to(self, device: torch.device | str) -> Sequences:
        return Sequences(
            self.tokens.to(device), self.prompt_mask.to(device), self.completion_mask.to(device)
        )

    @staticmethod
    def from_prompt_and_completion(prompt: Tensor, completion: Tensor) -> Sequences:
        """Concatenate prompts [B, P] and completions [B, C] (no padding) into one batch."""
        _check(prompt.dim() == 2 and completion.dim() == 2, "prompt and completion must be 2-D")
        _check(prompt.shape[0] == completion.shape[0], "prompt and completion batch sizes differ")
        tokens = torch.cat([prompt, completion], dim=1).long()
        prompt_mask = torch.zeros_like(tokens, dtype=torch.bool)
        prompt_mask[:, : prompt.shape[1]] = True
        return Sequences(tokens, prompt_mask, ~prompt_mask)

    @staticmethod
    def concat(batches: list[Sequences]) -> Sequences:
        """Stack batches of equal length along the batch dimension."""
        _check(len(batches) > 0, "concat needs at least one batch")
        _check(
            len({b.length for b in batches}) == 1,
            f"concat needs equal lengths, got {sorted({b.length for b in batches})}",
        )
        return Sequences(
            torch.cat([b.tokens for b in batches]),
            torch.cat([b.prompt_mask for b in batches]),
            torch.cat([b.completion_mask for b in batches]),
        )


@dataclass(frozen=True)
class ExpertLabels:
    """The expert's answer at positions of some sequences (from an `ExpertOracle`).

    sequences: the prefixes that were labelled
    mask:      [B, T] bool, the labelled positions (a subset of the completion positions)
    actions:   [B, T] long, a hard label per position (a sampled expert token), or None
    probs:     [B, T, V] float, the expert's next-token distribution per position, or None
    Exactly one of `actions`, `probs` is given.
    """

    sequences: Sequences
    mask: Tensor
    actions: Tensor | None = None
    probs: Tensor | None = None

    def __post_init__(self) -> None:
        shape = self.sequences.tokens.shape
        _check((self.actions is None) != (self.probs is None), "give exactly one of actions, probs")
        _check(
            self.mask.shape == shape, f"mask must be {tuple(shape)}, got {tuple(self.mask.shape)}"
        )
        _check(self.mask.dtype == torch.bool, "mask must be bool")
        if self.actions is not None:
            _check(self.actions.shape == shape, f"actions must be {tuple(shape)}")
            _check(self.actions.dtype == torch.long, "actions must be long")
        if self.probs is not None:
            _check(
                self.probs.dim() == 3 and self.probs.shape[:2] == shape,
                f"probs must be [{shape[0]}, {shape[1]}, V], got {tuple(self.probs.shape)}",
            )
            _check(self.probs.is_floating_point(), "probs must be floating point")

    @property
    def soft(self) -> bool:
        return self.probs is not None

    @property
    def n_labels(self) -> int:
        return int(self.mask.sum().item())


@dataclass(frozen=True)
class Comparisons:
    """Pairwise preferences: `chosen[i]` was preferred to `rejected[i]` by an annotator."""

    chosen: Sequences
    rejected: Sequences

    def __post_init__(self) -> None:
        _check(
            self.chosen.batch_size == self.rejected.batch_size,
            f"chosen ({self.chosen.batch_size}) and rejected ({self.rejected.batch_size}) "
            "must have the same number of sequences",
        )

    def __len__(self) -> int:
        return self.chosen.batch_size
