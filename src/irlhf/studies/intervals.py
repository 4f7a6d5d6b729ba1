"""Confidence intervals over seeds, shared by the studies' summaries."""

from __future__ import annotations

import numpy as np
from scipy import stats


def t_interval(
    values: np.ndarray,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean of the finite values (nan bounds with fewer
    than 2; all nan with none). `bounds`: the interval is clipped to them (a fraction's t-interval
    on three seeds can overshoot [0, 1])."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    if np.ptp(values) == 0:
        return mean, mean, mean
    low, high = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, float(low), float(high)


def verdict(low: float, high: float, bound: float = 0.0) -> str:
    """A claim "the quantity is above `bound`" read from its interval [low, high]: "holds" (the
    interval is above), "does not hold" (below) or "inconclusive" (it straddles the bound, or
    there is no interval: nan bounds)."""
    if low > bound:
        return "holds"
    if high < bound:
        return "does not hold"
    return "inconclusive"
