"""Tests for irlhf.losses.regularisers: the L2 penalty by hand."""

from __future__ import annotations

import pytest
import torch

from irlhf.losses import l2_penalty

from .helpers import assert_float_metrics, close, t


def test_l2_penalty_hand_values_and_gradient() -> None:
    a = t([1.0, -2.0]).requires_grad_(True)
    b = t([[3.0]]).requires_grad_(True)
    penalty, metrics = l2_penalty([a, b], 0.5)
    assert close(penalty, 0.5 * (1.0 + 4.0 + 9.0))
    assert close(metrics["loss/l2"], 7.0)
    assert_float_metrics(metrics)
    penalty.backward()  # d/dp coef * p^2 = 2 coef p = p at coef 0.5
    assert a.grad is not None and b.grad is not None
    assert a.grad.tolist() == [1.0, -2.0] and b.grad.tolist() == [[3.0]]


def test_l2_penalty_of_zeros_is_zero_and_empty_params_raise() -> None:
    penalty, _ = l2_penalty([torch.zeros(3)], 10.0)
    assert penalty.item() == 0.0
    with pytest.raises(ValueError, match="at least one tensor"):
        l2_penalty([], 1.0)
