"""The objectives of every paradigm, as small pure tensor functions.

One function per objective, in the style of DeepMind's rlax: tensors in, `(value, metrics)` out,
where `value` is a scalar loss to *minimise* (or, for advantage estimators and estimators of
per-token quantities, a tensor) and `metrics` maps namespaced keys ("loss/dpo", "ppo/clipfrac")
to python floats. No logging, no I/O, no optimiser steps: algorithms call these and log the
metrics themselves. Shapes and scalar arguments are checked, and a violation raises a one-line
`ValueError` naming the argument.

One module per paradigm, every public function re-exported here (`losses.nll(...)`):
  * `imitation`: nll, next_token_cross_entropy, generalized_jsd.
  * `preference`: bradley_terry, dpo.
  * `policy_gradient`: ppo_clip, clipped_value_loss, rloo_advantages, gae, whiten, kl_penalty.
  * `irl`: gail_discriminator, airl_logits, iq_learn.
  * `regularisers`: l2_penalty.

Conventions:
  * B = batch, T = tokens (time), V = vocabulary.
  * A mask is a bool or float (0/1) tensor with the shape of the per-token quantity it masks;
    means over tokens average over the positions where the mask is nonzero, and masked-out
    positions may hold anything (padding ids, garbage logits) without affecting the result.
  * Log-probabilities are natural logs of the probability of the sampled token (gathered with
    `selective_log_softmax` or equivalent), shape [B, T] per token or [B] per sequence.

Papers: NLL (behaviour cloning); generalized JSD (Agarwal et al. 2024, GKD); Bradley-Terry
(Bradley & Terry 1952; Christiano et al. 2017; Ouyang et al. 2022); DPO (Rafailov et al. 2023);
PPO (Schulman et al. 2017); RLOO (Ahmadian et al. 2024); GAE (Schulman et al. 2016); KL
estimators (Schulman 2020, "Approximating KL divergence"); GAIL (Ho & Ermon 2016); AIRL (Fu et
al. 2018); IQ-Learn (Garg et al. 2021). Each module's docstring names its own.
"""

from irlhf.losses._checks import Metrics
from irlhf.losses.imitation import generalized_jsd, next_token_cross_entropy, nll
from irlhf.losses.irl import airl_logits, gail_discriminator, iq_learn
from irlhf.losses.policy_gradient import (
    KL_ESTIMATORS,
    clipped_value_loss,
    gae,
    kl_penalty,
    ppo_clip,
    rloo_advantages,
    whiten,
)
from irlhf.losses.preference import bradley_terry, dpo
from irlhf.losses.regularisers import l2_penalty

__all__ = [
    "KL_ESTIMATORS",
    "Metrics",
    "airl_logits",
    "bradley_terry",
    "clipped_value_loss",
    "dpo",
    "gae",
    "gail_discriminator",
    "generalized_jsd",
    "iq_learn",
    "kl_penalty",
    "l2_penalty",
    "next_token_cross_entropy",
    "nll",
    "ppo_clip",
    "rloo_advantages",
    "whiten",
]
