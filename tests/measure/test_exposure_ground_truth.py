"""Ground truth: the oracle world's expert and a student, exported as Hugging Face directories,
give through `irlhf measure exposure` the same eps, R and AccErr as irlhf's own Monte-Carlo
exposure metric (`irlhf.metrics.exposure.exposure_bias_mc`) on the same world, within
Monte-Carlo error.

The prompts file holds the world's prompt distribution: each of its `n_prompts` prompt-only
tokens equally often, one per line. Errors: measure's from its bootstrap interval (95%: 3.92
standard errors wide); the Monte-Carlo metric's from its R_se, and for eps and AccErr (which it
gives no standard error for) measure's scaled by sqrt(n_measure / n_mc), both estimators being
means over independent prompts of the same per-prompt quantity. The Monte-Carlo AccErr = R / eps
of independent samples gets the delta method's error, AccErr * sqrt((se_R / R)^2 + (se_eps /
eps)^2) (measure's own AccErr pairs its expert and model continuations on the same prompts, so
at l = 1 it is exactly 1 and its interval has width 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from irlhf.measure import measure_exposure
from irlhf.metrics.exposure import exposure_bias_mc
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.worlds.oracle import OracleWorld

from .hf_dirs import save_model, token_words

N_MEASURE, N_MC, Z = 600, 3000, 4.0


def test_measure_exposure_matches_the_monte_carlo_metric(tmp_path: Path) -> None:
    world = OracleWorld(vocab_size=16, n_prompts=4, n_layer=1, n_embd=16, n_head=2, horizon=8)
    s = world.spec
    student = CausalLMPolicy.tiny(
        s.vocab_size + s.n_prompts, s.vocab_size, n_layer=1, n_embd=16, n_head=2,
        max_length=s.horizon + 1, seed=7,
    )  # fmt: skip
    student.model.load_state_dict(world.expert.model.state_dict())
    noise = torch.Generator().manual_seed(3)
    with torch.no_grad():  # the expert, perturbed: a student with a moderate, growing error
        for p in student.model.parameters():
            if p.dim() == 2:
                p.add_(0.15 * torch.randn(p.shape, generator=noise))
    student.eval()
    words = token_words(s.vocab_size) + token_words(s.n_prompts, "p")
    expert_dir = save_model(world.expert, tmp_path / "expert", words)
    student_dir = save_model(student, tmp_path / "student", words)
    prompts = [f"p{i % s.n_prompts}" for i in range(N_MEASURE)]

    doc = measure_exposure(
        expert_dir, student_dir, prompts, tmp_path / "out", max_new_tokens=s.horizon,
        samples=1, seed=11, batch_size=200, device="cpu",
    )  # fmt: skip
    mc = exposure_bias_mc(world, student, N_MC, torch.Generator().manual_seed(12))
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    sample = results[results.decoding == "sample"]

    def measured(quantity: str) -> tuple[np.ndarray, np.ndarray]:
        rows = sample[sample.quantity == quantity].sort_values("l")
        assert rows.l.tolist() == list(range(1, s.horizon + 1))
        return rows.value.to_numpy(), (rows.ci_high - rows.ci_low).to_numpy() / 3.92

    assert mc.R_se is not None
    eps_se_mc = measured("eps")[1] * np.sqrt(N_MEASURE / N_MC)
    acc_se_mc = mc.acc_err * np.sqrt((mc.R_se / mc.R) ** 2 + (eps_se_mc / mc.eps) ** 2)
    report = []
    for quantity, mc_values, other in (
        ("eps", mc.eps, eps_se_mc),
        ("R", mc.R, mc.R_se),
        ("acc_err", mc.acc_err, acc_se_mc),
    ):
        value, se = measured(quantity)
        bound = Z * np.sqrt(se**2 + other**2)
        report.append((quantity, value[-1], mc_values[-1], bound[-1]))
        assert (np.abs(value - mc_values) <= bound).all(), (quantity, value, mc_values, bound)
    print("\n".join(f"{q} at L: measure {a:.4f}, Monte-Carlo {b:.4f}, bound {c:.4f}"
                    for q, a, b, c in report))  # fmt: skip
    # the student compounds: AccErr grows faster than l would give at a fixed error
    assert doc["finding"].startswith("exposure bias (sample)")
    assert mc.R[-1] > mc.eps[-1] > 0


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_a_lower_precision_forward_still_gives_finite_numbers(tmp_path: Path, dtype: str) -> None:
    world = OracleWorld(vocab_size=16, n_prompts=2, n_layer=1, n_embd=16, n_head=2, horizon=4)
    words = token_words(16) + token_words(2, "p")
    expert_dir = save_model(world.expert, tmp_path / "expert", words)
    doc = measure_exposure(
        expert_dir, expert_dir, ["p0", "p1"] * 4, tmp_path / "out", max_new_tokens=4,
        device="cpu", dtype=dtype, n_bootstrap=50,
    )  # fmt: skip
    eps = [r for r in doc["at_L"] if r["quantity"] == "eps" and r["decoding"] == "sample"]
    assert eps and 0 <= eps[0]["value"] < 1e-2  # the expert against itself, in bfloat16
