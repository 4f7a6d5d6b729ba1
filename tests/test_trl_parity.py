"""irlhf's losses equal TRL's (1.16) on the same random inputs: numerical parity, shown.

TRL's loss code is called, not copied: GKD's `generalized_jsd_loss` (a static method), and the
DPO and reward trainers' own `compute_loss` methods, run on a stand-in trainer (the attributes
they read) with a stand-in model that returns the given per-token log-probs or rewards. Values,
gradients and the metrics both report are compared. Skipped when TRL is not installed (it is
the `bench` extra: `pip install -e ".[bench]"`; `make test` installs it).

Not compared: irlhf's conservative DPO (`label_smoothing` > 0, Mitchell 2023). TRL 1.16's
"sigmoid" loss has no label smoothing, and its "robust" loss (Chowdhury et al. 2024) is a
different estimator, so there is no TRL counterpart to check it against.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from irlhf import losses

pytest.importorskip("trl")
from trl import DPOTrainer, RewardTrainer  # noqa: E402
from trl.experimental.gkd import GKDTrainer  # noqa: E402

B, T, V = 6, 9, 11


class _SingleProcess:
    """What TRL's losses ask of an `accelerate.Accelerator` in a single process."""

    device = torch.device("cpu")

    @staticmethod
    def gather(x: torch.Tensor) -> torch.Tensor:
        return x

    gather_for_metrics = gather


def _trainer(**attributes) -> SimpleNamespace:
    """The attributes of a trainer that its `compute_loss` reads."""
    return SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_SingleProcess(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        **attributes,
    )


def _random(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ---- generalized JSD (GKD) -------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generalized_jsd_equals_gkd_trainer_loss(beta: float, temperature: float) -> None:
    student = _random(0, B, T, V, scale=3.0).requires_grad_()
    teacher = _random(1, B, T, V, scale=3.0)
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))
    labels[:, :3] = -100  # prompt positions
    labels[0, 7:] = -100  # padding after an early end
    theirs = GKDTrainer.generalized_jsd_loss(
        student, teacher, labels=labels, beta=beta, temperature=temperature
    )
    (their_grad,) = torch.autograd.grad(theirs, student)
    ours, metrics = losses.generalized_jsd(
        student, teacher, beta, mask=labels != -100, temperature=temperature
    )
    (our_grad,) = torch.autograd.grad(ours, student)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(our_grad, their_grad, atol=1e-7, rtol=1e-5)
    assert metrics["jsd/tokens"] == (labels != -100).sum().item()


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_generalized_jsd_sum_and_unmasked_reductions_equal_gkd(beta: float) -> None:
    student, teacher = _random(3, B, T, V), _random(4, B, T, V)
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(5))
    labels[:, :2] = -100
    theirs = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta, reduction="sum")
    ours, _ = losses.generalized_jsd(student, teacher, beta, labels != -100, reduction="sum")
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # without labels TRL's "batchmean" divides by the number of rows of the flattened [B, T]
    # positions it was given; passing [B * T, V] makes that the mean over tokens
    flat_s, flat_t = student.view(B * T, V), teacher.view(B * T, V)
    theirs = GKDTrainer.generalized_jsd_loss(flat_s, flat_t, None, beta, reduction="batchmean")
    ours, _ = losses.generalized_jsd(flat_s, flat_t, beta, reduction="batchmean")
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


@pytest.mark.xfail(
    strict=True,
    reason="differs: without labels TRL's 'batchmean' divides a [B, T, V] loss by B (torch's "
    "batchmean), irlhf's by B * T (its docstring says TRL does too); with labels, as GKDTrainer "
    "always calls it, both divide by the number of labelled tokens",
)
def test_generalized_jsd_batchmean_without_labels_on_3d_inputs() -> None:
    student, teacher = _random(3, B, T, V), _random(4, B, T, V)
    theirs = GKDTrainer.generalized_jsd_loss(student, teacher, None, 0.5, reduction="batchmean")
    ours, _ = losses.generalized_jsd(student, teacher, 0.5, reduction="batchmean")
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


# ---- Bradley-Terry (reward model) ------------------------------------------------------------


def test_bradley_terry_equals_reward_trainer_loss() -> None:
    chosen = _random(6, B, scale=2.0).requires_grad_()
    rejected = _random(7, B, scale=2.0).requires_grad_()
    # TRL's reward model scores [chosen; rejected] in one batch of 2B rows, one logit each
    model = lambda **_: SimpleNamespace(logits=torch.cat([chosen, rejected]).unsqueeze(-1))  # noqa: E731
    trainer = _trainer(args=SimpleNamespace(center_rewards_coefficient=None))
    inputs = {"input_ids": torch.zeros(2 * B, T, dtype=torch.long)}
    inputs["attention_mask"] = torch.ones(2 * B, T, dtype=torch.long)
    theirs = RewardTrainer.compute_loss(trainer, model, inputs)
    their_grads = torch.autograd.grad(theirs, (chosen, rejected))
    ours, metrics = losses.bradley_terry(chosen, rejected)
    our_grads = torch.autograd.grad(ours, (chosen, rejected))
    torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=1e-6)
    for a, b in zip(our_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-6)
    reported = trainer._metrics["train"]
    assert metrics["bt/accuracy"] == pytest.approx(reported["accuracy"][0], abs=1e-7)
    assert metrics["bt/margin"] == pytest.approx(reported["margin"][0], abs=1e-6)


# ---- DPO -------------------------------------------------------------------------------------


def _dpo_trainer(beta: float) -> SimpleNamespace:
    """A DPOTrainer's loss settings: sigmoid loss (the default), precomputed reference."""
    return _trainer(
        beta=beta,
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        f_divergence_type="reverse_kl",
        label_smoothing=0.0,
        ld_alpha=None,
        use_weighting=False,
        aux_loss_enabled=False,
        precompute_ref_logps=True,
    )


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_equals_dpo_trainer_loss(beta: float) -> None:
    prompt = 3
    # per-token log-probs of [chosen; rejected] (2B rows) at the T - 1 shifted positions
    per_token = -_random(8, 2 * B, T - 1).abs().requires_grad_()
    completion_mask = torch.zeros(2 * B, T, dtype=torch.long)
    completion_mask[:, prompt:] = 1
    completion_mask[1, T - 2 :] = 0  # a shorter chosen completion
    shifted = completion_mask[:, 1:].float()
    ref_chosen, ref_rejected = -_random(9, B).abs() * 5, -_random(10, B).abs() * 5

    def model(**kwargs) -> SimpleNamespace:
        zeros = torch.zeros(2 * B, T - 1)
        # TRL's fused LM head returns 0 where the label is -100 (off the completion)
        return SimpleNamespace(
            log_probs=per_token * shifted,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=zeros.bool(),
        )

    inputs = {
        "input_ids": torch.zeros(2 * B, T, dtype=torch.long),
        "attention_mask": torch.ones(2 * B, T, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    trainer = _dpo_trainer(beta)
    theirs = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    (their_grad,) = torch.autograd.grad(theirs, per_token)

    sequence = (per_token * shifted).sum(1)  # (2B,) summed completion log-probs
    ours, metrics = losses.dpo(sequence[:B], sequence[B:], ref_chosen, ref_rejected, beta)
    (our_grad,) = torch.autograd.grad(ours, per_token)
    torch.testing.assert_close(ours, theirs, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(our_grad, their_grad, atol=1e-8, rtol=1e-6)
    reported = trainer._metrics["train"]
    for ours_key, theirs_key in [
        ("dpo/accuracy", "rewards/accuracies"),
        ("dpo/margin", "rewards/margins"),
        ("dpo/chosen_reward", "rewards/chosen"),
        ("dpo/rejected_reward", "rewards/rejected"),
    ]:
        assert metrics[ours_key] == pytest.approx(reported[theirs_key][0], abs=1e-6)
