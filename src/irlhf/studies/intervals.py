"""Confidence intervals over seeds, shared by the studies' summaries."""

from __future__ import annotations

import numpy as np
from scipy import stats


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of the mean (nan bounds with fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    if np.ptp(values) == 0:
        return mean, mean, mean
    low, high = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    return mean, float(low), float(high)
