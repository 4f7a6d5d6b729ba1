"""What a metric does instead of returning nan: raise `UndefinedMetric`, or (where a caller
records the nan) warn with `UndefinedMetricWarning`."""

from __future__ import annotations


class UndefinedMetric(ValueError):
    """A metric read where it has no value (e.g. AccErr_<=L where eps_<=L is 0 or +inf, a
    repetition rate of no n-grams, a correlation with a constant)."""


class UndefinedMetricWarning(RuntimeWarning):
    """A metric returned nan because it is undefined for these inputs (e.g. a correlation with a
    constant): warned, so that the nan is never silent."""
