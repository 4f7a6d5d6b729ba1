"""irlhf's metrics for a researcher's own Hugging Face models (`irlhf measure ...`): exposure
bias (Arora et al. 2022) of a model against an expert as oracle (`measure_exposure`).

Only `irlhf.cli` imports this package; it imports metrics, policies, types and worlds.
"""

from irlhf.measure.exposure import measure_exposure
from irlhf.measure.inputs import MeasureInputError

__all__ = ["MeasureInputError", "measure_exposure"]
