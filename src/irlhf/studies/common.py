"""What several studies share: the names learners go by in their tables and figures, and the
small oracle world of the neural-world grids. (Intervals are in `intervals.py`, feedback budgets
in `budgets.py`.)"""

from __future__ import annotations

from irlhf.studies.budgets import EQUAL_ARM, EQUAL_LABEL

LEARNER_NAMES = {
    "sft": "BC (SFT)",
    EQUAL_ARM: EQUAL_LABEL,
    "dagger": "DAgger",
    "gkd": "GKD (on-policy distillation)",
    "maxent_irl": "MaxEnt IRL",
    "gail": "GAIL",
    "airl": "AIRL",
    "iq_learn": "IQ-Learn",
}
"""An arm's name (its `algorithm`, or the equal-budget BC arm) -> how tables and legends call it
(the compounding study's labels; decomposition overrides a few)."""

ORACLE_KNOBS = {"vocab_size": 32, "n_layer": 1, "n_embd": 16, "n_head": 2, "init_std": 1.0}
"""A small, sharp oracle (~1.0 nat of entropy per token of its own samples, 3.5 uniform) that
the student can learn in CPU minutes: with the default oracle (V = 256, 2 x 64, init_std 0.3) a
2 x 64 student SFT'd on 512 samples stays ~1.7 nats of KL away at every step, and with a sharper
one of that size (init_std 0.6) it ends worse than uniform, so neither shows anything but an
unlearnt expert. With these knobs SFT reached ~0.4-1.0 nats of KL, soft-label distillation
~0.03-0.1."""
