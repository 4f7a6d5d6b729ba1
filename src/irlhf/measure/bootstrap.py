"""Per-prompt accumulation and the bootstrap over prompts for `irlhf measure exposure`.

`PerPrompt` sums each prompt's per-step values over its samples (+inf kept apart, never inf -
inf); `statistics` turns per-prompt values into Arora et al. 2022's quantities (see
`irlhf.measure.exposure`) under any prompt weights, so the point estimate (uniform weights) and
every bootstrap replicate (multinomial resampling weights, Efron's percentile bootstrap over
prompts) are one matrix product each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

N_BOOTSTRAP = 1000
CONFIDENCE = 0.95


@dataclass
class PerPrompt:
    """Per-step values summed over each prompt's samples ([n_prompts, L] float64 each, the
    finite part; `infinite` marks the cells where some sample's value is +inf) and the
    samples counted per prompt."""

    n_prompts: int
    length: int
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    infinite: dict[str, np.ndarray] = field(default_factory=dict)
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.n_prompts)

    def add(self, rows: np.ndarray, values: dict[str, Tensor]) -> None:
        """Add [B, L] values of the samples of prompts `rows` [B]."""
        shape = (self.n_prompts, self.length)
        for name, value in values.items():
            array = value.cpu().numpy()
            inf = np.isinf(array)
            np.add.at(self.sums.setdefault(name, np.zeros(shape)), rows, np.where(inf, 0.0, array))
            np.logical_or.at(self.infinite.setdefault(name, np.zeros(shape, bool)), rows, inf)
        np.add.at(self.counts, rows, 1)

    def means(self, name: str) -> np.ndarray:
        """[n_prompts, L] the mean over each prompt's samples (+inf where one is +inf)."""
        return np.where(self.infinite[name], np.inf, self.sums[name] / self.counts[:, None])


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[k, L] weights [k, n] @ values [n, L] for values in [0, +inf]: +inf where a prompt of
    infinite value has positive weight, and a prompt of weight 0 adds 0 (never 0 * inf)."""
    infinite = np.isinf(values)
    finite = weights @ np.where(infinite, 0.0, values)
    reached = (weights > 0).astype(float) @ infinite.astype(float) > 0
    return np.where(reached, np.inf, finite)


def statistics(
    weights: np.ndarray, expert: PerPrompt, own: PerPrompt, name: str
) -> dict[str, np.ndarray]:
    """Every quantity [k, L] under prompt weights [k, n] (rows summing to 1) for one decoding:
    with NaN where a ratio is undefined (eps = 0 or +inf)."""
    L = own.length
    lengths = np.arange(1, L + 1)
    out: dict[str, np.ndarray] = {}
    for suffix, key in (("", name), ("_model", "model")):
        e_step = weighted_mean(weights, expert.means(f"kl:{key}"))  # (k, L)
        r_step = weighted_mean(weights, own.means(f"kl:{key}"))
        eps = np.cumsum(e_step, axis=1) / lengths
        R = np.cumsum(r_step, axis=1)
        defined = (eps > 0) & np.isfinite(eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(defined, R / np.where(defined, eps, 1.0), np.nan)
            pct = np.where(defined, (acc - lengths) / lengths * 100.0, np.nan)
        out |= {f"eps{suffix}": eps, f"R{suffix}": R, f"acc_err{suffix}": acc}
        out |= {f"pct_ex_acc_err{suffix}": pct}
        out |= {f"kl_step_expert{suffix}": e_step, f"kl_step_own{suffix}": r_step}
    out["nll_oracle"] = np.cumsum(weighted_mean(weights, own.means("nll")), axis=1) / lengths
    return out


def bootstrap_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] resampling weights: multinomial counts of n draws with replacement, / n."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 15]))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n


def with_intervals(
    point: dict[str, np.ndarray], boot: dict[str, np.ndarray], confidence: float = CONFIDENCE
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (value [L], ci_low [L], ci_high [L]): percentile bootstrap intervals over the
    defined replicates (NaN only where the value itself is undefined)."""
    tail = (1 - confidence) / 2
    out = {}
    for name, value in point.items():
        draws = boot[name]
        low = np.full(value.shape[1], np.nan)
        high = np.full(value.shape[1], np.nan)
        for j in range(value.shape[1]):
            ok = draws[~np.isnan(draws[:, j]), j]
            if len(ok) and not np.isnan(value[0, j]):
                low[j], high[j] = np.quantile(ok, [tail, 1 - tail], method="inverted_cdf")
        out[name] = (value[0], low, high)
    return out


def summarise(
    expert: PerPrompt, decodings: dict[str, PerPrompt], seed: int, n_boot: int = N_BOOTSTRAP
) -> dict[str, Any]:
    """decoding -> quantity -> (value, ci_low, ci_high) arrays over l = 1..L from the expert's
    continuations and each decoding's, plus the expert's own NLL-oracle under "expert"."""
    n = expert.n_prompts
    point_w, boot_w = np.full((1, n), 1.0 / n), bootstrap_weights(n, n_boot, seed)
    table: dict[str, Any] = {}
    for name, own in decodings.items():
        table[name] = with_intervals(
            statistics(point_w, expert, own, name), statistics(boot_w, expert, own, name)
        )
    lengths = np.arange(1, expert.length + 1)
    nll = expert.means("nll")
    expert_point = {"nll_oracle": np.cumsum(weighted_mean(point_w, nll), axis=1) / lengths}
    expert_boot = {"nll_oracle": np.cumsum(weighted_mean(boot_w, nll), axis=1) / lengths}
    table["expert"] = with_intervals(expert_point, expert_boot)
    return table
