"""Shared by the loss tests: float64 tensors, the 1e-9 tolerance, hand-written helpers."""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

TOL = 1e-9


def t(values: object) -> torch.Tensor:
    """A float64 tensor."""
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor | float, expected: float) -> bool:
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().item()
    return abs(actual - expected) <= TOL * max(1.0, abs(expected))


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x), written by hand."""
    return math.log(1.0 + math.exp(x))


def assert_float_metrics(metrics: dict[str, float]) -> None:
    assert metrics, "metrics must not be empty"
    for key, value in metrics.items():
        assert "/" in key, key
        assert type(value) is float, (key, type(value))


finite_floats = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, allow_infinity=False)


def kl_by_hand(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)
