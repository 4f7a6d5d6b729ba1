"""irlhf's metrics for a researcher's own Hugging Face models (`irlhf measure ...`): exposure
bias (Arora et al. 2022) of a model against an expert as oracle (`measure_exposure`),
self-recovery after a perturbed prefix (He et al. 2021, `measure_recovery`) and repetition
self-reinforcement with the degeneration of its continuations (Xu et al. 2022,
`measure_repetition`), and a reward model's scores of several models' continuations (the
Llama 2 Figure 20 analogue, `measure_rewards`). `irlhf.measure.example` builds models to try
them on (irlhf's teacher, an SFT student, its RLHF'd copy and the reward model).

Only `irlhf.cli` imports this package; it imports metrics, policies, types, worlds,
`irlhf.algorithms.reward_model` (to load an irlhf reward model) and, in `example` only, the
degeneration kind's RLHF round.
"""

from irlhf.measure.exposure import measure_exposure
from irlhf.measure.inputs import MeasureInputError
from irlhf.measure.recovery import measure_recovery
from irlhf.measure.repetition import measure_repetition
from irlhf.measure.rewards import measure_rewards

__all__ = [
    "MeasureInputError",
    "measure_exposure",
    "measure_recovery",
    "measure_repetition",
    "measure_rewards",
]
