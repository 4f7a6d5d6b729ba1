"""The measure package's small pieces, hand-checked: +inf-safe weighted means, ratios left out
where eps is 0 or +inf, percentile intervals, and the decoding's policy distribution against the
sampler's own (`irlhf.policies.sampling.draw`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from irlhf.measure.bootstrap import PerPrompt, statistics, weighted_mean, with_intervals
from irlhf.measure.exposure import kl_from_log_probs, parse_decoding, policy_log_probs
from irlhf.policies.sampling import draw


def test_weighted_mean_keeps_inf_and_never_multiplies_it_by_zero() -> None:
    values = np.array([[1.0, math.inf], [3.0, 2.0]])
    weights = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    assert weighted_mean(weights, values).tolist() == [[2.0, math.inf], [1.0, math.inf], [3.0, 2.0]]


def _per_prompt(**rows: list[list[float]]) -> PerPrompt:
    """One sample per prompt: per-step values by name, [n_prompts][L] each."""
    first = next(iter(rows.values()))
    acc = PerPrompt(len(first), len(first[0]))
    acc.add(
        np.arange(len(first)), {k: torch.tensor(v, dtype=torch.float64) for k, v in rows.items()}
    )
    return acc


def test_statistics_by_hand() -> None:
    # two prompts, L = 2; on expert prefixes KL 1, 1 and 3, 3; on own prefixes 2, 4 and 2, 6
    zeros, ones = [[0.0, 0.0]] * 2, [[1.0, 1.0]] * 2
    expert = _per_prompt(**{"kl:sample": [[1.0, 1.0], [3.0, 3.0]], "kl:model": zeros, "nll": ones})
    own = _per_prompt(
        **{"kl:sample": [[2.0, 4.0], [2.0, 6.0]], "kl:model": ones, "nll": [[1.0, 3.0]] * 2}
    )
    out = statistics(np.full((1, 2), 0.5), expert, own, "sample")
    assert out["eps"][0].tolist() == [2.0, 2.0]  # (1 + 3) / 2; ((1 + 1) / 2 + (3 + 3) / 2) / 2
    assert out["R"][0].tolist() == [2.0, 7.0]  # 2; 2 + (4 + 6) / 2
    assert out["acc_err"][0].tolist() == [1.0, 3.5]
    assert out["pct_ex_acc_err"][0].tolist() == [0.0, 75.0]  # (7 - 2 * 2) / (2 * 2) * 100
    assert out["nll_oracle"][0].tolist() == [1.0, 2.0]
    assert np.isnan(out["acc_err_model"]).all()  # eps_model = 0: undefined, left out


def test_intervals_are_percentiles_of_the_defined_replicates() -> None:
    point = {"x": np.array([[1.0, np.nan]])}
    boot = {"x": np.array([[0.0, 1.0], [1.0, np.nan], [2.0, 3.0], [np.nan, 4.0]])}
    value, low, high = with_intervals(point, boot, confidence=0.5)["x"]
    assert value[0] == 1.0 and (low[0], high[0]) == (0.0, 2.0)
    assert np.isnan(low[1]) and np.isnan(high[1])  # the value itself is undefined


@pytest.mark.parametrize("name", ["sample", "top-k=3", "top-p=0.6", "greedy"])
def test_policy_log_probs_is_the_distribution_draw_samples_from(name: str) -> None:
    decoding = parse_decoding(name, temperature=0.7).decoding
    logits = torch.randn(1, 10, generator=torch.Generator().manual_seed(0)).repeat(500, 1)
    tokens, drawn_log_probs = draw(logits, torch.Generator().manual_seed(1), decoding)
    log_h = policy_log_probs(logits.double(), decoding)
    assert torch.allclose(log_h.exp().sum(-1), torch.ones(500, dtype=torch.float64))
    assert torch.isfinite(log_h.gather(-1, tokens[:, None])).all()  # never a filtered token
    if not decoding.greedy:
        chosen = log_h.gather(-1, tokens[:, None]).squeeze(-1).float()
        assert torch.allclose(chosen, drawn_log_probs, atol=1e-5)
    support = torch.isfinite(log_h[0])
    assert set(tokens.tolist()) <= set(torch.nonzero(support).squeeze(-1).tolist())


def test_kl_from_log_probs_is_inf_where_the_policy_lacks_expert_mass() -> None:
    expert = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64).log()
    assert kl_from_log_probs(expert, expert).item() == 0.0
    half = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).log()
    assert kl_from_log_probs(expert, half).item() == math.inf
    q = torch.tensor([[0.25, 0.25, 0.5]], dtype=torch.float64)
    assert kl_from_log_probs(expert, q.log()).item() == pytest.approx(math.log(2))
