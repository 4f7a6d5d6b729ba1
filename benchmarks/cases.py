"""The rows of the benchmark: what is measured, at which sizes, against which peer."""

from __future__ import annotations

import logging
import os
import warnings

import irlhf_side
from common import Size, Workload

SIZES = [
    Size("small", n_layer=2, n_embd=128, completion=32, sample_tokens=64),
    Size("small, long", n_layer=2, n_embd=128, completion=64, sample_tokens=128),
    Size("medium", n_layer=4, n_embd=256, completion=32, sample_tokens=64),
]
ROWS = ["sft", "sft_trl_defaults", "reward_model", "dpo", "rloo", "distillation", "sampler"]
SLOW_ROWS = {"rloo", "distillation", "sft_trl_defaults"}  # fewer steps per timed block
TARGETS = {"sft": 2.0, "dpo": 2.0, "rloo": 2.0, "distillation": 2.0, "sampler": 1.5}
"""Issue 7's targets: how many times faster irlhf must be, at the small size."""
LABELS = {
    "sft": "SFT step",
    "sft_trl_defaults": "SFT step (TRL defaults)",
    "reward_model": "reward model step",
    "dpo": "DPO step",
    "rloo": "RLOO step (+gen)",
    "distillation": "distillation step (+gen)",
    "sampler": "sampler throughput",
}
PEERS = {
    "sft": "SFTTrainer",
    "sft_trl_defaults": "SFTTrainer with its defaults (bf16 autocast, gradient checkpointing)",
    "reward_model": "RewardTrainer",
    "dpo": "DPOTrainer",
    "rloo": "RLOOTrainer",
    "distillation": "GKDTrainer",
    "sampler": "model.generate",
}


def quiet() -> None:
    """TRL and transformers warn about the toy tokenizer and CPU; the table is the output."""
    warnings.filterwarnings("ignore")
    for name in ("transformers", "trl", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build(row: str, size: Size, work: Workload, teacher):
    """(irlhf run, peer run) for one row, both from the same starting weights."""
    import trl_side

    policy = size.policy(seed=0)
    mine, peer = irlhf_side.fresh(policy), irlhf_side.fresh(policy)
    if row == "sft_trl_defaults":
        return irlhf_side.sft(mine, size, work), trl_side.sft(peer, size, work, fair=False)
    if row == "distillation":
        return (
            irlhf_side.distillation(mine, size, work, irlhf_side.fresh(teacher)),
            trl_side.distillation(peer, size, work, irlhf_side.fresh(teacher)),
        )
    return getattr(irlhf_side, row)(mine, size, work), getattr(trl_side, row)(peer, size, work)
