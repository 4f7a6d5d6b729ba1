"""Argument checks and masked reductions shared by every loss in `irlhf.losses`.

Each check raises a one-line `ValueError` that names the loss and the argument; `_mask_weights`
and `_masked_mean` implement the package's mask convention (see `irlhf.losses`).
"""

from __future__ import annotations

import torch
from torch import Tensor

Metrics = dict[str, float]
"""Namespaced metric keys ("loss/dpo", "ppo/clipfrac") to python floats."""


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_shape(fn: str, name: str, t: Tensor, expected: tuple[int, ...], like: str) -> None:
    """Raise `fn: name must have shape <expected> like <like>, got <actual>` on a mismatch."""
    if _shape(t) != tuple(expected):
        raise ValueError(
            f"{fn}: {name} must have shape {tuple(expected)} like {like}, got {_shape(t)}"
        )


def _check_ndim(fn: str, name: str, t: Tensor, ndims: tuple[int, ...], what: str) -> None:
    if t.dim() not in ndims:
        raise ValueError(f"{fn}: {name} must be {what}, got shape {_shape(t)}")


def _check_float(fn: str, name: str, t: Tensor) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")


def _check_range(
    fn: str, name: str, value: float, low: float, high: float, low_open: bool, high_open: bool
) -> None:
    """Raise unless low <(=) value <(=) high (nan and inf always fail an open bound)."""
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{fn}: {name} must be in {interval}, got {value!r}")


def _check_choice(fn: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {list(allowed)}, got {value!r}")


def _mask_weights(fn: str, name: str, mask: Tensor | None, like: Tensor, like_name: str) -> Tensor:
    """The mask as float weights with the dtype of `like` (all ones when None), shape-checked."""
    if mask is None:
        return torch.ones_like(like)
    _check_shape(fn, name, mask, _shape(like), like_name)
    if not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise ValueError(f"{fn}: {name} must be bool or floating point, got {mask.dtype}")
    return mask.to(like.dtype)


def _masked_mean(fn: str, x: Tensor, weights: Tensor) -> Tensor:
    """sum(x * w) / sum(w) over positions with w != 0; masked positions may hold nan or inf."""
    count = weights.sum()
    if count.item() <= 0:
        raise ValueError(f"{fn}: mask selects no positions")
    x = torch.where(weights != 0, x, torch.zeros_like(x))
    return (x * weights).sum() / count


def _item(x: Tensor) -> float:
    return float(x.detach().item())
