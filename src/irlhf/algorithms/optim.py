"""The optimiser the neural algorithms build: AdamW (Loshchilov & Hutter 2019, "Decoupled Weight
Decay Regularization"), in one place so that every algorithm's update is built the same way.

(The tabular algorithms step their tables with `maxent_irl.TableAdam` or L-BFGS instead.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw(
    params: Iterable[torch.Tensor], lr: float, weight_decay: float, fused: bool = True
) -> torch.optim.AdamW:
    """AdamW with torch's default betas (0.9, 0.999) and eps (1e-8).

    `fused=True`: torch's fused single-kernel update (as TRL/transformers use by default) when
    every parameter is a floating-point tensor on the CPU or a GPU, else torch's
    default implementation. `fused=False`: torch's default implementation (`fused=None`: the
    for-each update on a GPU, a loop over parameters on the CPU), whose rounding differs from
    the fused kernel's; PPO, neural IQ-Learn, the neural adversarial discriminator and tabular
    DPO have always used it, and keep it so that their numbers do not change."""
    params = list(params)
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    fused = fused and fusable
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
