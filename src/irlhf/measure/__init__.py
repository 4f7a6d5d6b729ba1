"""irlhf's metrics for a researcher's own Hugging Face models (`irlhf measure ...`): exposure
bias (Arora et al. 2022) of a model against an expert as oracle (`measure_exposure`),
self-recovery after a perturbed prefix (He et al. 2021, `measure_recovery`) and repetition
self-reinforcement with the degeneration of its continuations (Xu et al. 2022,
`measure_repetition`).

Only `irlhf.cli` imports this package; it imports metrics, policies, types and worlds.
"""

from irlhf.measure.exposure import measure_exposure
from irlhf.measure.inputs import MeasureInputError
from irlhf.measure.recovery import measure_recovery
from irlhf.measure.repetition import measure_repetition

__all__ = ["MeasureInputError", "measure_exposure", "measure_recovery", "measure_repetition"]
