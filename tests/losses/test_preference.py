"""bradley_terry and dpo by hand, their symmetries, and their argument checks."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from irlhf.losses import (
    bradley_terry,
    dpo,
)

from .helpers import assert_float_metrics, close, finite_floats, t

# ---------------------------------------------------------------------------------------------
# bradley_terry
# ---------------------------------------------------------------------------------------------


def test_bradley_terry_hand_values() -> None:
    loss, metrics = bradley_terry(t([1.0, 0.0]), t([0.0, 0.5]))
    # margins 1 and -0.5: -log sigmoid(d) = log(1 + e^{-d})
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(0.5))) / 2
    assert close(loss, expected)
    assert close(metrics["loss/bradley_terry"], expected)
    assert metrics["bt/accuracy"] == 0.5
    assert close(metrics["bt/margin"], 0.25)
    assert_float_metrics(metrics)


def test_bradley_terry_equal_rewards_is_log2_and_ties_are_wrong() -> None:
    loss, metrics = bradley_terry(t([3.0, -1.0]), t([3.0, -1.0]))
    assert close(loss, math.log(2.0))
    assert metrics["bt/accuracy"] == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(finite_floats, finite_floats), min_size=1, max_size=6))
def test_bradley_terry_swapping_labels(pairs: list[tuple[float, float]]) -> None:
    # softplus(-d) - softplus(d) = -d, so L(a, b) - L(b, a) = -mean(a - b).
    a, b = t([p[0] for p in pairs]), t([p[1] for p in pairs])
    forward, _ = bradley_terry(a, b)
    backward, _ = bradley_terry(b, a)
    assert abs(float(forward - backward) + float((a - b).mean())) < 1e-9


def test_bradley_terry_errors() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "bradley_terry: rejected_rewards must have shape (3,) like chosen_rewards, got (2,)"
        ),
    ):
        bradley_terry(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="bradley_terry: chosen_rewards must be \\[N\\]"):
        bradley_terry(torch.zeros(3, 1), torch.zeros(3, 1))


# ---------------------------------------------------------------------------------------------
# dpo
# ---------------------------------------------------------------------------------------------


def test_dpo_hand_values() -> None:
    # Pair 0: chosen log-ratio -1 - (-1.5) = 0.5, rejected -2 - (-1) = -1 -> rewards 0.25, -0.5.
    # Pair 1: chosen log-ratio -3 - (-2) = -1, rejected -1 - (-1) = 0 -> rewards -0.5, 0.
    beta = 0.5
    loss, metrics = dpo(t([-1.0, -3.0]), t([-2.0, -1.0]), t([-1.5, -2.0]), t([-1.0, -1.0]), beta)
    h0, h1 = 0.25 - (-0.5), -0.5 - 0.0
    expected = (math.log(1 + math.exp(-h0)) + math.log(1 + math.exp(-h1))) / 2
    assert close(loss, expected)
    assert close(metrics["loss/dpo"], expected)
    assert metrics["dpo/accuracy"] == 0.5
    assert close(metrics["dpo/margin"], (h0 + h1) / 2)
    assert close(metrics["dpo/chosen_reward"], (0.25 - 0.5) / 2)
    assert close(metrics["dpo/rejected_reward"], (-0.5 + 0.0) / 2)
    assert_float_metrics(metrics)


def test_dpo_label_smoothing_hand_value() -> None:
    loss, _ = dpo(t([-1.0]), t([-2.0]), t([-1.5]), t([-1.0]), 0.5, label_smoothing=0.1)
    h = 0.75
    expected = 0.9 * math.log(1 + math.exp(-h)) + 0.1 * math.log(1 + math.exp(h))
    assert close(loss, expected)


def test_dpo_policy_equal_to_reference_is_log2() -> None:
    logps = t([-4.0, -7.0, -1.0])
    loss, metrics = dpo(logps, logps - 1, logps, logps - 1, beta=0.1)
    assert close(loss, math.log(2.0))
    assert metrics["dpo/margin"] == 0.0


def test_dpo_errors() -> None:
    x8, x7 = torch.zeros(8), torch.zeros(7)
    message = "dpo: policy_rejected_logps must have shape (8,) like policy_chosen_logps, got (7,)"
    with pytest.raises(ValueError, match=re.escape(message)):
        dpo(x8, x7, x8, x8, 0.1)
    with pytest.raises(ValueError, match="dpo: ref_rejected_logps must have shape"):
        dpo(x8, x8, x8, x7, 0.1)
    with pytest.raises(ValueError, match=re.escape("dpo: beta must be in (0.0, inf), got -0.1")):
        dpo(x8, x8, x8, x8, -0.1)
    with pytest.raises(ValueError, match="dpo: beta must be in"):
        dpo(x8, x8, x8, x8, 0.0)
    with pytest.raises(ValueError, match="dpo: label_smoothing must be in"):
        dpo(x8, x8, x8, x8, 0.1, label_smoothing=0.6)
