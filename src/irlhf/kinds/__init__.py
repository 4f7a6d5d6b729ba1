"""Experiment kinds: the only layer that knows both a world and an algorithm.

A kind is a pydantic config (one experiment, `kind = "<name>"`) and a run function: world ->
feedback channel -> algorithm -> policy -> metric records. Each module registers its kind with
`irlhf.experiments.register_kind` at import, with its results version; importing this package
registers them all.

    imitation         SFT / DAgger / GKD in an automaton or a neural LM world (`imitation.py`)
    irl               MaxEnt IRL, GAIL, AIRL, IQ-Learn, tabular or neural (`irl.py`, with
                      `irl_neural.py` and `irl_config.py`)
    rlhf              SFT, then (iterated) RLHF from it (`rlhf.py`)
    degeneration      a student of the real-text teacher, scored for repetition (`degeneration.py`)
    overoptimization  proxy vs gold reward along best-of-n and RL paths (`overoptimization.py`)
    recovery          an imitation learner, then the self-recovery probe (`recovery.py`)

`common.py` holds what several kinds share, `world_spec.py` the `[world]` table.
"""

from irlhf.kinds import degeneration, imitation, irl, overoptimization, recovery, rlhf

__all__ = ["degeneration", "imitation", "irl", "overoptimization", "recovery", "rlhf"]
