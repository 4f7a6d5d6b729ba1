"""nll, next_token_cross_entropy and generalized_jsd (with its written-out gradient) by hand,
against TRL's formula and autograd, and their argument checks."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from irlhf.losses import (
    generalized_jsd,
    next_token_cross_entropy,
    nll,
)

from .helpers import assert_float_metrics, close, finite_floats, kl_by_hand, t

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
# next_token_cross_entropy
# ---------------------------------------------------------------------------------------------


def test_next_token_cross_entropy_hand_values() -> None:
    # Position 0: p = (1/4, 3/4), target 1; position 1: p = (2/3, 1/3), target 0.
    logits = t([[[0.0, math.log(3.0)], [math.log(2.0), 0.0]]])
    loss, metrics = next_token_cross_entropy(logits, torch.tensor([[1, 0]]))
    expected = (-math.log(3 / 4) - math.log(2 / 3)) / 2  # = log(2) / 2
    assert close(loss, expected) and close(expected, math.log(2.0) / 2)
    assert close(metrics["loss/lm"], expected)
    assert_float_metrics(metrics)


def test_next_token_cross_entropy_is_nll_without_a_mask() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=gen, dtype=torch.float64)
    targets = torch.randint(7, (3, 5), generator=gen)
    loss, _ = next_token_cross_entropy(logits, targets)
    assert close(loss, nll(logits, targets)[0].item())


def test_next_token_cross_entropy_checks_targets_as_nll_does() -> None:
    fn = "next_token_cross_entropy"
    with pytest.raises(ValueError, match=re.escape(f"{fn}: targets must have shape (2, 3)")):
        next_token_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=f"{fn}: targets must be long"):
        next_token_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 3))


# ---------------------------------------------------------------------------------------------
# generalized_jsd
# ---------------------------------------------------------------------------------------------

# One token, V = 2: teacher P = (0.2, 0.8) (given as log-probabilities), student Q = (0.5, 0.5).
TEACHER = t([[[math.log(0.2), math.log(0.8)]]])
STUDENT = t([[[0.0, 0.0]]])


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
    (losses.imitation._MixtureJSD); it must equal autograd through the same formula (the teacher
    requiring grad takes that path) and pass torch's finite-difference gradcheck, in float64,
    masks and a teacher with zero-probability tokens included."""
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
