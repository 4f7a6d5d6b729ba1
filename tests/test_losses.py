"""Tests for irlhf.losses: hand-computed values, invariants, and argument checks.

Expected values are written out with math.log / math.exp on a handful of numbers, never by
calling the function under test. Hand-value comparisons run in float64 with tolerance 1e-9.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from irlhf.losses import (
    airl_logits,
    bradley_terry,
    dpo,
    gae,
    gail_discriminator,
    generalized_jsd,
    iq_learn,
    kl_penalty,
    nll,
    ppo_clip,
    rloo_advantages,
)

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


# ---------------------------------------------------------------------------------------------
# nll
# ---------------------------------------------------------------------------------------------


def test_nll_hand_values() -> None:
    logits = t([[[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]])  # (1, 2, 3)
    targets = torch.tensor([[0, 2]])
    loss, metrics = nll(logits, targets)
    nll_0 = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.0)) - 1.0
    nll_1 = math.log(1.0 + 1.0 + math.exp(3.0)) - 3.0
    assert close(loss, (nll_0 + nll_1) / 2)
    assert close(metrics["loss/nll"], (nll_0 + nll_1) / 2)
    assert close(metrics["nll/accuracy"], 0.5)  # argmax 1 != 0, argmax 2 == 2
    assert metrics["nll/tokens"] == 2.0
    assert_float_metrics(metrics)


def test_nll_mask_excludes_positions_and_ignore_ids() -> None:
    logits = t([[[1.0, 2.0, 0.0], [math.nan, math.inf, 0.0]]])  # garbage at the masked position
    targets = torch.tensor([[0, -100]])  # the masked target is an ignore id
    for mask in (torch.tensor([[True, False]]), t([[1.0, 0.0]])):
        loss, metrics = nll(logits, targets, mask)
        assert close(loss, math.log(math.exp(1.0) + math.exp(2.0) + 1.0) - 1.0)
        assert metrics["nll/tokens"] == 1.0
        assert metrics["nll/accuracy"] == 0.0


def test_nll_errors() -> None:
    logits = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match=re.escape("nll: targets must have shape (2, 3)")):
        nll(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="nll: targets must be long"):
        nll(logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=re.escape("nll: mask must have shape (2, 3)")):
        nll(logits, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="nll: mask selects no positions"):
        nll(logits, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# generalized_jsd
# ---------------------------------------------------------------------------------------------

# One token, V = 2: teacher P = (0.2, 0.8) (given as log-probabilities), student Q = (0.5, 0.5).
TEACHER = t([[[math.log(0.2), math.log(0.8)]]])
STUDENT = t([[[0.0, 0.0]]])


def kl_by_hand(p: tuple[float, ...], q: tuple[float, ...]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def test_generalized_jsd_beta0_is_forward_kl() -> None:
    loss, metrics = generalized_jsd(STUDENT, TEACHER, beta=0.0)
    expected = 0.2 * math.log(0.2 / 0.5) + 0.8 * math.log(0.8 / 0.5)  # KL(P || Q)
    assert close(loss, expected)
    assert close(metrics["loss/jsd"], expected)
    assert_float_metrics(metrics)


def test_generalized_jsd_beta1_is_reverse_kl() -> None:
    loss, _ = generalized_jsd(STUDENT, TEACHER, beta=1.0)
    expected = 0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)  # KL(Q || P)
    assert close(loss, expected)


@pytest.mark.parametrize("beta", [0.5, 0.25])
def test_generalized_jsd_mixture_hand_values(beta: float) -> None:
    loss, _ = generalized_jsd(STUDENT, TEACHER, beta=beta)
    p, q = (0.2, 0.8), (0.5, 0.5)
    m = tuple(beta * pi + (1 - beta) * qi for pi, qi in zip(p, q, strict=True))
    expected = beta * kl_by_hand(p, m) + (1 - beta) * kl_by_hand(q, m)
    if beta == 0.5:  # the same thing spelt out: m = (0.35, 0.65)
        spelt = 0.5 * (0.2 * math.log(0.2 / 0.35) + 0.8 * math.log(0.8 / 0.65)) + 0.5 * (
            0.5 * math.log(0.5 / 0.35) + 0.5 * math.log(0.5 / 0.65)
        )
        assert abs(spelt - expected) < 1e-15
    assert close(loss, expected)


def test_generalized_jsd_temperature_divides_both_logits() -> None:
    # Teacher logits log(0.2), log(0.8) at tau = 2 give P = (1/3, 2/3); the student stays uniform.
    loss, _ = generalized_jsd(STUDENT, TEACHER, beta=0.0, temperature=2.0)
    expected = (1 / 3) * math.log((1 / 3) / 0.5) + (2 / 3) * math.log((2 / 3) / 0.5)
    assert close(loss, expected)


def test_generalized_jsd_zero_probability_teacher_is_finite() -> None:
    teacher = t([[[0.0, -math.inf]]])  # P = (1, 0)
    student = t([[[0.0, 0.0]]]).requires_grad_()
    loss, _ = generalized_jsd(student, teacher, beta=0.0)
    assert close(loss, math.log(2.0))  # 1 * log(1 / 0.5)
    loss, _ = generalized_jsd(student, teacher, beta=0.5)  # M = (0.75, 0.25)
    expected = 0.5 * math.log(1 / 0.75) + 0.5 * (
        0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    )
    assert close(loss, expected)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_generalized_jsd_mask_and_reductions() -> None:
    # Two tokens in one sequence, the second masked and full of garbage.
    student = torch.cat([STUDENT, t([[[1e4, -1e4]]])], dim=1)  # (1, 2, 2)
    teacher = torch.cat([TEACHER, t([[[-1e4, 1e4]]])], dim=1)
    mask = torch.tensor([[True, False]])
    kl = 0.2 * math.log(0.2 / 0.5) + 0.8 * math.log(0.8 / 0.5)
    loss, metrics = generalized_jsd(student, teacher, beta=0.0, mask=mask)
    assert close(loss, kl)
    assert metrics["jsd/tokens"] == 1.0
    # Two sequences x one token each: token_mean averages; sum adds; batchmean = TRL's token mean.
    student2 = torch.cat([STUDENT, STUDENT], dim=0)  # (2, 1, 2)
    teacher2 = torch.cat([TEACHER, STUDENT], dim=0)  # second row: teacher == student, KL 0
    mean_loss, _ = generalized_jsd(student2, teacher2, beta=0.0)
    assert close(mean_loss, kl / 2)
    sum_loss, _ = generalized_jsd(student2, teacher2, beta=0.0, reduction="sum")
    assert close(sum_loss, kl)
    batchmean_loss, _ = generalized_jsd(student2, teacher2, beta=0.0, reduction="batchmean")
    assert close(batchmean_loss, kl / 2)


def trl_style_reference(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float
) -> torch.Tensor:
    """An independent, F.kl_div-based statement of TRL's semantics (unmasked, "batchmean")."""
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta == 0.0:
        per_entry = F.kl_div(log_q, log_p, reduction="none", log_target=True)  # KL(P || Q)
    elif beta == 1.0:
        per_entry = F.kl_div(log_p, log_q, reduction="none", log_target=True)  # KL(Q || P)
    else:
        log_m = torch.log(beta * log_p.exp() + (1 - beta) * log_q.exp())
        per_entry = beta * F.kl_div(log_m, log_p, reduction="none", log_target=True) + (
            1 - beta
        ) * F.kl_div(log_m, log_q, reduction="none", log_target=True)
    batch, horizon = per_entry.shape[:2]
    return per_entry.sum() / (batch * horizon)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generalized_jsd_matches_trl_semantics(beta: float, temperature: float) -> None:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    teacher = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    expected = trl_style_reference(student, teacher, beta, temperature)
    for reduction in ("token_mean", "batchmean"):
        loss, _ = generalized_jsd(
            student, teacher, beta, temperature=temperature, reduction=reduction
        )
        assert torch.allclose(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_gradient_equals_autograd_through_the_formula(beta: float) -> None:
    """For 0 < beta < 1 and a fixed teacher, the student's gradient is written out
    (losses._MixtureJSD); it must equal autograd through the same formula (the teacher requiring
    grad takes that path) and pass torch's finite-difference gradcheck, in float64, masks and a
    teacher with zero-probability tokens included."""
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)
    teacher[0, 1, :3] = -math.inf  # P = 0 there
    mask = torch.rand(2, 5, generator=gen) < 0.7
    mask[0, 1] = True

    def loss_and_grad(requires_teacher_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        s = student.clone().requires_grad_()
        tt = teacher.clone().requires_grad_(requires_teacher_grad)
        loss, _ = generalized_jsd(s, tt, beta, mask=mask, temperature=0.8)
        loss.backward()
        return loss.detach(), s.grad

    fused, fused_grad = loss_and_grad(False)
    reference, reference_grad = loss_and_grad(True)
    assert torch.allclose(fused, reference, rtol=1e-12, atol=1e-13)
    assert torch.allclose(fused_grad, reference_grad, rtol=1e-10, atol=1e-13)
    assert torch.autograd.gradcheck(
        lambda s: generalized_jsd(s, teacher, beta, mask=mask)[0],
        student.clone().requires_grad_(),
    )


def test_generalized_jsd_with_zero_probability_student_tokens_is_finite() -> None:
    """Student logits of -inf (Q = 0), alone or where the teacher's P = 0 too, contribute 0 as
    in the formula's limit: the written-out path gives the reference loss and a finite
    gradient, 0 at those tokens, equal to the reference's where the reference is finite."""
    gen = torch.Generator().manual_seed(2)
    student = torch.randn(2, 3, 11, generator=gen, dtype=torch.float64)
    teacher = torch.randn(2, 3, 11, generator=gen, dtype=torch.float64)
    student[..., :4] = -math.inf
    for both in (False, True):
        if both:
            teacher[..., :2] = -math.inf
        grads, values = [], []
        for teacher_grad in (False, True):
            s = student.clone().requires_grad_()
            loss, _ = generalized_jsd(s, teacher.clone().requires_grad_(teacher_grad), 0.5)
            loss.backward()
            values.append(loss.detach())
            grads.append(s.grad)
        assert torch.isfinite(values[0]) and torch.allclose(values[0], values[1], atol=1e-13)
        assert torch.isfinite(grads[0]).all() and (grads[0][..., :4] == 0).all()
        if not both:  # (the reference's own gradient is nan where P = Q = 0)
            assert torch.allclose(grads[0], grads[1], atol=1e-13)


def test_generalized_jsd_in_float32_is_close_to_float64() -> None:
    gen = torch.Generator().manual_seed(3)
    student = 3 * torch.randn(4, 6, 512, generator=gen, dtype=torch.float64)
    teacher = 3 * torch.randn(4, 6, 512, generator=gen, dtype=torch.float64)
    results = []
    for dtype in (torch.float64, torch.float32):
        s = student.to(dtype).detach().clone().requires_grad_()
        loss, _ = generalized_jsd(s, teacher.to(dtype), 0.5)
        loss.backward()
        results.append((loss.detach().double(), s.grad.double()))
    (exact, exact_grad), (approx, approx_grad) = results
    assert abs(float(approx - exact)) <= 1e-5 * float(exact)
    assert (approx_grad - exact_grad).abs().max() <= 1e-5 * exact_grad.abs().max()


def test_generalized_jsd_refuses_a_second_derivative_instead_of_getting_it_wrong() -> None:
    student = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 5, dtype=torch.float64)
    loss, _ = generalized_jsd(student, teacher, 0.5)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(loss, student, create_graph=True)


@settings(max_examples=50, deadline=None)
@given(
    student=st.lists(finite_floats, min_size=3, max_size=3),
    teacher=st.lists(finite_floats, min_size=3, max_size=3),
    beta=st.floats(min_value=0.0, max_value=1.0),
)
def test_generalized_jsd_nonnegative_and_zero_on_self(
    student: list[float], teacher: list[float], beta: float
) -> None:
    s, q = t([[student]]), t([[teacher]])
    loss, _ = generalized_jsd(s, q, beta)
    assert float(loss) >= -1e-12
    self_loss, _ = generalized_jsd(s, s.clone(), beta)
    assert abs(float(self_loss)) <= 1e-12


def test_generalized_jsd_errors() -> None:
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=re.escape("generalized_jsd: teacher_logits must have")):
        generalized_jsd(x, torch.zeros(2, 3, 5), 0.5)
    with pytest.raises(ValueError, match=re.escape("generalized_jsd: beta must be in [0.0, 1.0]")):
        generalized_jsd(x, x, -0.1)
    with pytest.raises(ValueError, match="generalized_jsd: beta must be in"):
        generalized_jsd(x, x, 1.5)
    with pytest.raises(ValueError, match="generalized_jsd: temperature must be in"):
        generalized_jsd(x, x, 0.5, temperature=0.0)
    with pytest.raises(ValueError, match="generalized_jsd: reduction must be one of"):
        generalized_jsd(x, x, 0.5, reduction="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("generalized_jsd: mask must have shape (2, 3)")):
        generalized_jsd(x, x, 0.5, mask=torch.ones(2, 4, dtype=torch.bool))


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


# ---------------------------------------------------------------------------------------------
# ppo_clip
# ---------------------------------------------------------------------------------------------


def test_ppo_clip_per_token_hand_values() -> None:
    # ratios 1.5, 0.5, 1.1; advantages 1, 1, -2; eps = 0.2
    logprobs = t([[math.log(1.5), math.log(0.5), math.log(1.1)]])
    old = t([[0.0, 0.0, 0.0]])
    loss, metrics = ppo_clip(logprobs, old, t([[1.0, 1.0, -2.0]]), clip_eps=0.2)
    # min(1.5 * 1, 1.2 * 1) = 1.2; min(0.5, 0.8) = 0.5; min(1.1 * -2, 1.1 * -2) = -2.2
    assert close(loss, -(1.2 + 0.5 - 2.2) / 3)
    assert close(metrics["loss/policy"], -(1.2 + 0.5 - 2.2) / 3)
    assert close(metrics["ppo/clipfrac"], 2 / 3)
    approx_kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + (0.1 - math.log(1.1))) / 3
    assert close(metrics["ppo/approx_kl"], approx_kl)
    assert close(metrics["ppo/ratio_mean"], (1.5 + 0.5 + 1.1) / 3)
    assert_float_metrics(metrics)


def test_ppo_clip_per_sequence_advantages_broadcast() -> None:
    # ratios [[1.5, 0.5], [1.1, 0.5]], advantages per sequence [1, -1]
    logprobs = t([[math.log(1.5), math.log(0.5)], [math.log(1.1), math.log(0.5)]])
    old = torch.zeros_like(logprobs)
    loss, metrics = ppo_clip(logprobs, old, t([1.0, -1.0]), clip_eps=0.2)
    # 1.2, 0.5, min(-1.1, -1.1) = -1.1, min(-0.5, -0.8) = -0.8
    assert close(loss, -(1.2 + 0.5 - 1.1 - 0.8) / 4)
    assert close(metrics["ppo/clipfrac"], 3 / 4)
    per_token, _ = ppo_clip(logprobs, old, t([[1.0, 1.0], [-1.0, -1.0]]), clip_eps=0.2)
    assert close(loss, float(per_token))


def test_ppo_clip_ratio_one_gives_minus_mean_advantage() -> None:
    logprobs = t([[-1.0, -2.0, -0.5]])
    loss, metrics = ppo_clip(logprobs, logprobs.clone(), t([[2.0, -1.0, 5.0]]), clip_eps=0.1)
    assert close(loss, -(2.0 - 1.0 + 5.0) / 3)
    assert metrics["ppo/clipfrac"] == 0.0
    assert close(metrics["ppo/approx_kl"], 0.0)
    assert close(metrics["ppo/ratio_mean"], 1.0)


def test_ppo_clip_mask_excludes_positions() -> None:
    logprobs = t([[0.0, 500.0]]).requires_grad_()  # garbage at the masked position
    old = t([[0.0, -500.0]])
    mask = torch.tensor([[True, False]])
    loss, metrics = ppo_clip(logprobs, old, t([[3.0, 1e9]]), clip_eps=0.2, mask=mask)
    assert close(loss, -3.0)
    assert metrics["ppo/clipfrac"] == 0.0
    loss.backward()
    assert logprobs.grad is not None and torch.isfinite(logprobs.grad).all()
    assert logprobs.grad[0, 1] == 0.0


def test_ppo_clip_errors() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(
        ValueError,
        match=re.escape("ppo_clip: old_logprobs must have shape (2, 3) like logprobs, got (2, 4)"),
    ):
        ppo_clip(x, torch.zeros(2, 4), x, 0.2)
    with pytest.raises(ValueError, match=re.escape("ppo_clip: advantages must have shape (2,)")):
        ppo_clip(x, x, torch.zeros(3), 0.2)
    with pytest.raises(ValueError, match=re.escape("ppo_clip: advantages must have shape (2, 3)")):
        ppo_clip(x, x, torch.zeros(3, 2), 0.2)
    with pytest.raises(ValueError, match=re.escape("ppo_clip: clip_eps must be in (0.0, inf)")):
        ppo_clip(x, x, x, 0.0)


# ---------------------------------------------------------------------------------------------
# rloo_advantages
# ---------------------------------------------------------------------------------------------


def test_rloo_hand_values() -> None:
    advantages, metrics = rloo_advantages(t([[1.0, 2.0, 6.0], [0.0, 4.0, 2.0]]))
    expected = [
        [1.0 - (2.0 + 6.0) / 2, 2.0 - (1.0 + 6.0) / 2, 6.0 - (1.0 + 2.0) / 2],
        [0.0 - (4.0 + 2.0) / 2, 4.0 - (0.0 + 2.0) / 2, 2.0 - (0.0 + 4.0) / 2],
    ]
    assert torch.allclose(advantages, t(expected), rtol=0, atol=TOL)
    assert close(metrics["rloo/reward_mean"], 15.0 / 6)
    assert close(metrics["rloo/advantage_mean"], 0.0)
    assert_float_metrics(metrics)


def test_rloo_two_samples() -> None:
    advantages, _ = rloo_advantages(t([[3.0, 1.0]]))
    assert advantages.tolist() == [[2.0, -2.0]]


@settings(max_examples=50, deadline=None)
@given(value=finite_floats, k=st.integers(min_value=2, max_value=6))
def test_rloo_constant_rewards_give_zero(value: float, k: int) -> None:
    advantages, _ = rloo_advantages(torch.full((3, k), value, dtype=torch.float64))
    assert torch.allclose(advantages, torch.zeros(3, k, dtype=torch.float64), atol=1e-12)


def test_rloo_errors() -> None:
    with pytest.raises(ValueError, match="rloo_advantages: rewards must have >= 2 samples"):
        rloo_advantages(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="rloo_advantages: rewards must be"):
        rloo_advantages(torch.zeros(4))


# ---------------------------------------------------------------------------------------------
# gae
# ---------------------------------------------------------------------------------------------


def test_gae_hand_values() -> None:
    rewards, values = t([[1.0, 2.0, 3.0]]), t([[0.5, 1.0, 1.5]])
    gamma, lam = 0.9, 0.8
    advantages, metrics = gae(rewards, values, gamma, lam)
    d2 = 3.0 + 0.0 - 1.5  # terminal after the last token
    d1 = 2.0 + 0.9 * 1.5 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2 = d2
    a1 = d1 + 0.9 * 0.8 * a2
    a0 = d0 + 0.9 * 0.8 * a1
    assert torch.allclose(advantages, t([[a0, a1, a2]]), rtol=0, atol=TOL)
    assert close(metrics["gae/advantage_mean"], (a0 + a1 + a2) / 3)
    assert close(metrics["gae/return_mean"], (a0 + 0.5 + a1 + 1.0 + a2 + 1.5) / 3)
    assert_float_metrics(metrics)


def test_gae_bootstrap_value() -> None:
    rewards, values = t([[1.0, 2.0, 3.0]]), t([[0.5, 1.0, 1.5, 2.0]])  # V(s_3) = 2
    advantages, _ = gae(rewards, values, 0.9, 0.8)
    d2 = 3.0 + 0.9 * 2.0 - 1.5
    d1 = 2.0 + 0.9 * 1.5 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    assert torch.allclose(advantages, t([[a0, a1, a2]]), rtol=0, atol=TOL)


def test_gae_mask_makes_padding_terminal() -> None:
    # The third token is padding with garbage reward and value: the episode ends after token 1.
    rewards, values = t([[1.0, 2.0, 1e6]]), t([[0.5, 1.0, -1e6, 7.0]])
    mask = torch.tensor([[True, True, False]])
    advantages, _ = gae(rewards, values, 0.9, 0.8, mask=mask)
    a1 = 2.0 + 0.0 - 1.0
    a0 = (1.0 + 0.9 * 1.0 - 0.5) + 0.72 * a1
    assert torch.allclose(advantages, t([[a0, a1, 0.0]]), rtol=0, atol=TOL)


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value() -> None:
    rewards, values = t([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]), t([[0.5, 1.0, 1.5], [2.0, 0.0, 1.0]])
    advantages, _ = gae(rewards, values, 1.0, 1.0)
    expected = [
        [6.0 - 0.5, 5.0 - 1.0, 3.0 - 1.5],
        [3.5 - 2.0, 3.0 - 0.0, 4.0 - 1.0],
    ]
    assert torch.allclose(advantages, t(expected), rtol=0, atol=TOL)


def test_gae_lambda_zero_is_one_step_td() -> None:
    rewards, values = t([[1.0, 2.0, 3.0]]), t([[0.5, 1.0, 1.5]])
    advantages, _ = gae(rewards, values, 0.9, 0.0)
    expected = [1.0 + 0.9 * 1.0 - 0.5, 2.0 + 0.9 * 1.5 - 1.0, 3.0 - 1.5]
    assert torch.allclose(advantages, t([expected]), rtol=0, atol=TOL)


def test_gae_errors() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=re.escape("gae: values must have shape (2, 3) or (2, 4)")):
        gae(x, torch.zeros(2, 5), 0.9, 0.9)
    with pytest.raises(ValueError, match=re.escape("gae: gamma must be in [0.0, 1.0], got 1.5")):
        gae(x, x, 1.5, 0.9)
    with pytest.raises(ValueError, match="gae: gamma must be in"):
        gae(x, x, -0.1, 0.9)
    with pytest.raises(ValueError, match="gae: lam must be in"):
        gae(x, x, 0.9, 2.0)
    with pytest.raises(
        ValueError, match=re.escape("gae: mask must have shape (2, 3) like rewards")
    ):
        gae(x, x, 0.9, 0.9, mask=torch.ones(3, 2, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# kl_penalty
# ---------------------------------------------------------------------------------------------


def test_kl_penalty_hand_values() -> None:
    logp, logq = t([math.log(0.5)]), t([math.log(0.25)])  # p = 0.5, q = 0.25
    expected = {
        "k1": math.log(2.0),
        "k2": 0.5 * math.log(2.0) ** 2,
        "k3": 0.5 - 1.0 + math.log(2.0),  # q/p - 1 - log(q/p)
        "abs": math.log(2.0),
    }
    for kind, value in expected.items():
        per_token, metrics = kl_penalty(logp, logq, kind)  # type: ignore[arg-type]
        assert close(per_token[0], value), kind
        assert close(metrics["kl/mean"], value), kind
        assert_float_metrics(metrics)


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_kl_penalty_unbiased_estimators_average_to_exact_kl(kind: str) -> None:
    # E_{x ~ p}[k(x)] over all three outcomes equals KL(p || q) for k1 and k3.
    p, q = (0.5, 0.3, 0.2), (0.2, 0.2, 0.6)
    per_token, _ = kl_penalty(t([math.log(x) for x in p]), t([math.log(x) for x in q]), kind)  # type: ignore[arg-type]
    expectation = sum(pi * float(k) for pi, k in zip(p, per_token, strict=True))
    assert close(expectation, kl_by_hand(p, q))


def test_kl_penalty_mask_and_errors() -> None:
    per_token, metrics = kl_penalty(
        t([[0.0, 5.0]]), t([[-1.0, 0.0]]), "k1", mask=torch.tensor([[True, False]])
    )
    assert per_token.tolist() == [[1.0, 5.0]]  # the per-token tensor is not masked
    assert metrics["kl/mean"] == 1.0
    with pytest.raises(ValueError, match=re.escape("kl_penalty: kind must be one of ['k1'")):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kl_penalty: ref_logprobs must have shape"):
        kl_penalty(torch.zeros(2), torch.zeros(3), "k1")


# ---------------------------------------------------------------------------------------------
# gail_discriminator and airl_logits
# ---------------------------------------------------------------------------------------------


def test_gail_discriminator_hand_values() -> None:
    loss, metrics = gail_discriminator(t([0.0, 2.0]), t([-1.0, 1.0, 3.0]))
    expert = (math.log(2.0) + math.log(1 + math.exp(-2.0))) / 2  # -log sigmoid(x)
    policy = (softplus(-1.0) + softplus(1.0) + softplus(3.0)) / 3  # -log(1 - sigmoid(x))
    assert close(loss, expert + policy)
    assert close(metrics["loss/discriminator"], expert + policy)
    assert metrics["disc/expert_acc"] == 0.5
    assert close(metrics["disc/policy_acc"], 1 / 3)
    assert_float_metrics(metrics)


def test_gail_discriminator_masks() -> None:
    loss, metrics = gail_discriminator(
        t([[0.0, -1e9]]),
        t([[1.0, 1e9]]),
        expert_mask=torch.tensor([[True, False]]),
        policy_mask=t([[1.0, 0.0]]),
    )
    assert close(loss, math.log(2.0) + softplus(1.0))
    assert metrics["disc/policy_acc"] == 0.0
    with pytest.raises(ValueError, match="gail_discriminator: policy_mask must have shape"):
        gail_discriminator(t([0.0]), t([0.0, 1.0]), policy_mask=torch.ones(3, dtype=torch.bool))


def test_airl_logits_hand_values() -> None:
    f, pi = t([1.0, 0.0]), (0.5, 0.25)
    logits, metrics = airl_logits(f, t([math.log(pi[0]), math.log(pi[1])]))
    assert close(logits[0], 1.0 + math.log(2.0))
    assert close(logits[1], math.log(4.0))
    # sigmoid(logit) is D = e^f / (e^f + pi)
    assert close(torch.sigmoid(logits[0]), math.exp(1.0) / (math.exp(1.0) + 0.5))
    assert close(torch.sigmoid(logits[1]), 1.0 / (1.0 + 0.25))
    assert close(metrics["airl/logit_mean"], (1.0 + math.log(2.0) + math.log(4.0)) / 2)
    assert_float_metrics(metrics)
    with pytest.raises(ValueError, match=re.escape("airl_logits: log_pi must have shape (2,)")):
        airl_logits(f, torch.zeros(3, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# iq_learn
# ---------------------------------------------------------------------------------------------

# Expert: two transitions, the second terminal (V(s') = 0). Policy: one transition.
Q_E, V_E, VN_E = t([2.0, 1.0]), t([2.5, 1.5]), t([1.5, 0.0])
V_P, VN_P = t([1.0]), t([0.5])
GAMMA = 0.9


def test_iq_learn_online_chi2_hand_values() -> None:
    loss, metrics = iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA, alpha=0.5)
    r = [2.0 - 0.9 * 1.5, 1.0 - 0.9 * 0.0]  # r = Q - gamma V(s') = [0.65, 1.0]
    softq = -(r[0] + r[1]) / 2
    value = ((2.5 - 0.9 * 1.5) + (1.5 - 0.0) + (1.0 - 0.9 * 0.5)) / 3  # pooled over 3
    chi2 = (r[0] ** 2 + r[1] ** 2) / 2 / (4 * 0.5)
    assert close(loss, softq + value + chi2)
    assert close(metrics["loss/iq"], softq + value + chi2)
    assert close(metrics["iq/reward_expert"], (r[0] + r[1]) / 2)
    assert close(metrics["iq/value_term"], value)
    assert close(metrics["iq/chi2_term"], chi2)
    assert_float_metrics(metrics)


def test_iq_learn_offline_without_regulariser() -> None:
    loss, metrics = iq_learn(Q_E, V_E, VN_E, None, None, GAMMA, divergence="none")
    softq = -((2.0 - 0.9 * 1.5) + 1.0) / 2
    value = ((2.5 - 0.9 * 1.5) + 1.5) / 2  # expert states only
    assert close(loss, softq + value)
    assert metrics["iq/chi2_term"] == 0.0


def test_iq_learn_masks_exclude_positions() -> None:
    garbage = t([1e9])
    loss, _ = iq_learn(
        torch.cat([Q_E, garbage]),
        torch.cat([V_E, garbage]),
        torch.cat([VN_E, garbage]),
        torch.cat([V_P, garbage]),
        torch.cat([VN_P, garbage]),
        GAMMA,
        mask_expert=torch.tensor([True, True, False]),
        mask_policy=torch.tensor([True, False]),
    )
    reference, _ = iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA)
    assert close(loss, float(reference))


def test_iq_learn_errors() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("iq_learn: v_next_expert must have shape (2,) like q_expert, got (3,)"),
    ):
        iq_learn(Q_E, V_E, torch.zeros(3, dtype=torch.float64), V_P, VN_P, GAMMA)
    with pytest.raises(ValueError, match="iq_learn: v_policy and v_next_policy must both"):
        iq_learn(Q_E, V_E, VN_E, V_P, None, GAMMA)
    with pytest.raises(ValueError, match="iq_learn: divergence must be one of"):
        iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA, divergence="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iq_learn: alpha must be in"):
        iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA, alpha=-1.0)
    with pytest.raises(ValueError, match="iq_learn: gamma must be in"):
        iq_learn(Q_E, V_E, VN_E, V_P, VN_P, 1.01)
    with pytest.raises(ValueError, match="iq_learn: mask_policy must have shape"):
        iq_learn(Q_E, V_E, VN_E, V_P, VN_P, GAMMA, mask_policy=torch.ones(2, dtype=torch.bool))
