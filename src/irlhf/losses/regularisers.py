"""Regularisers added to a loss: an L2 (ridge) penalty on parameters.

The L2 penalty of ridge regression (Hoerl & Kennard 1970) and of weight decay in neural networks
(Krogh & Hertz 1992), here on the tabular reward model's weights and the tabular adversarial
discriminator's tables. (AdamW's decoupled weight decay, Loshchilov & Hutter 2019, is the
optimiser's, not a loss term.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from torch import Tensor

from irlhf.losses._checks import Metrics, _item


def l2_penalty(params: Sequence[Tensor], coef: float) -> tuple[Tensor, Metrics]:
    """L2 penalty on a list of parameter tensors:

        L = coef * sum_p sum_i p_i^2

    (ridge regression's lambda / 2 ||w||^2 is coef = lambda / 2).

    Args:
        params: one or more floating-point tensors (any shapes).
        coef: the penalty's weight (>= 0 to penalise).

    Returns:
        (penalty, {"loss/l2"}).
    """
    if len(params) == 0:
        raise ValueError("l2_penalty: params must hold at least one tensor")
    penalty = cast(Tensor, coef * sum(p.square().sum() for p in params))  # params is not empty
    return penalty, {"loss/l2": _item(penalty)}
