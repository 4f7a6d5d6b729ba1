"""Equal feedback budgets for comparisons of BC with DAgger and GKD.

Interactive imitation buys its edge with oracle queries (and, here, optimiser steps); a fair
comparison also gives behaviour cloning that much: the `sft_equal` arm is BC on as many
demonstration tokens as the interactive arm's demonstration tokens plus oracle queries, with as
many optimiser steps. Studies state every arm's budget: demonstration tokens, oracle queries,
annotator comparisons and optimiser steps (`BUDGET_KEYS`, seed means of what each run
recorded; RLHF's optimiser steps are its SFT phase's).
"""

from __future__ import annotations

import math

import pandas as pd

from irlhf.algorithms.dagger import DAggerConfig
from irlhf.algorithms.gkd import GKDConfig

BUDGET_KEYS = ("demo_tokens", "oracle_queries", "annotator_comparisons", "optimizer_steps")
EQUAL_ARM = "sft_equal"
EQUAL_LABEL = "BC, equal budget"


def equal_budget_demos(n_demos: int, queries: float, horizon: int) -> int:
    """Demonstrations for BC at the interactive arm's budget: its own plus one sequence per
    `horizon` oracle queries (each query labels one token)."""
    return n_demos + math.ceil(queries / horizon)


def dagger_matching_gkd(
    gkd: GKDConfig, n_demos: int, horizon: int, rounds: int, fit_steps: int, **knobs: object
) -> DAggerConfig:
    """DAgger with about GKD's oracle queries: roll-outs per round such that the labels plus
    the expected expert steps of `rounds` rounds equal GKD's expected queries."""
    probe = DAggerConfig(rounds=rounds, rollouts_per_round=1, **knobs)
    per_rollout = probe.expected_queries(horizon)  # queries per roll-out per round, summed
    rollouts = max(1, round(gkd.expected_queries(n_demos, horizon) / per_rollout))
    fit = probe.fit.model_copy(update={"steps": fit_steps, "batch_size": gkd.batch_size,
                                       "lr": gkd.lr})  # fmt: skip
    return probe.model_copy(update={"rollouts_per_round": rollouts, "fit": fit})


def arm_column(runs: pd.DataFrame, group: list[str]) -> pd.Series:
    """Each run's arm: its algorithm, or `sft_equal` for a BC run whose demonstrations
    outnumber the smallest BC run's in its `group` (the same world and learner)."""
    arms = runs["algorithm"].astype(str).copy()
    sft = runs["algorithm"] == "sft"
    smallest = runs[sft].groupby(group)["demonstrations.n"].transform("min")
    arms[
        sft & (runs.loc[sft, "demonstrations.n"] > smallest).reindex(runs.index, fill_value=False)
    ] = EQUAL_ARM
    return arms


def budgets(scalars: pd.DataFrame) -> dict:
    """Seed means of the budget records of one arm (columns: metrics, rows: seeds); a budget
    the arm's kind does not record (e.g. inverse RL's oracle queries) is left out."""
    return {
        k: float(scalars[k].mean())
        for k in BUDGET_KEYS
        if k in scalars and scalars[k].notna().any()
    }
