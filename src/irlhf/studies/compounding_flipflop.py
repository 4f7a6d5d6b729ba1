"""Study `compounding` in the flip-flop trap world (`irlhf study compounding --world flipflop`):
the tabular grid (neural students are a later step).

Tabular BC (add-0.1 smoothing), DAgger (8 rounds x 50 roll-outs) and BC at DAgger's budget
(`sft_equal`) in the `absorbing` and `recoverable` flip-flop presets (`irlhf.worlds.flipflop`),
exact regret J_L(expert) - J_L(model) at every prefix length and its power-law exponent over
seeds. One world per preset (world seed 0) for every run: only the data seed (demonstrations,
roll-outs, labels) varies, so the interval is over data, not over worlds (`world_seed` in the
summary). Smoothing sensitivity (issue 14, item 6): extra BC arms with add-0.01 and add-1.0
smoothing (`sft_smooth_0.01`, `sft_smooth_1`), summarised in the `smoothing` table beside the
add-0.1 arm. Expected: BC compounds in the absorbing world (the prototype: exponent 1.51 at
V = 16) and not in the recoverable one (1.06); DAgger ~1 in both.
"""

from __future__ import annotations

import pandas as pd

from irlhf.algorithms.dagger import DAggerConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import DemoSpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.studies.budgets import equal_budget_demos

DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()
"""The claim as measured here (the report's text for the flip-flop world)."""
TITLE = "Compounding error in the flip-flop trap world: tabular BC vs DAgger"
PRESETS = ("absorbing", "recoverable")
WORLD_SEED = 0
"""The world seed of every run of the grid (the run seed is the data seed)."""
DEFAULT_SMOOTHING = SFTConfig().smoothing
SMOOTHINGS = (0.01, DEFAULT_SMOOTHING, 1.0)
"""BC's add-k smoothing levels of the sensitivity table (the add-0.1 level is the `sft` arm)."""
# profile -> (seeds, horizon)
PROFILES = {"quick": (4, 64), "default": (8, 128), "full": (20, 256)}


def smooth_arm(smoothing: float) -> str:
    """The arm name of BC at a non-default smoothing: "sft_smooth_0.01"."""
    return f"sft_smooth_{smoothing:g}"


def configs(profile: str) -> list[ImitationConfig]:
    """The tabular grid: per preset, BC, DAgger, BC at DAgger's budget and BC at the other
    smoothings, seeds 0..n-1 as data seeds in the world of seed `WORLD_SEED`."""
    seeds, horizon = PROFILES[profile]
    n_equal = equal_budget_demos(50, DAggerConfig().expected_queries(horizon), horizon)
    arms: list[tuple[str, int, float]] = [
        ("sft", 50, DEFAULT_SMOOTHING),
        ("dagger", 50, DEFAULT_SMOOTHING),
        ("sft", n_equal, DEFAULT_SMOOTHING),
        *(("sft", 50, k) for k in SMOOTHINGS if k != DEFAULT_SMOOTHING),
    ]
    out = []
    for preset in PRESETS:
        world = FlipFlopWorldSpec(preset=preset, horizon=horizon, seed=WORLD_SEED)
        for algorithm, n, smoothing in arms:
            for seed in range(seeds):
                out.append(
                    ImitationConfig(
                        seed=seed,
                        world=world,
                        algorithm=algorithm,
                        demonstrations=DemoSpec(n=n),
                        sft=SFTConfig(smoothing=smoothing),
                    )
                )
    return out


def relabel_smoothing(runs: pd.DataFrame, arms: pd.Series) -> pd.Series:
    """`arms` with BC runs at a non-default smoothing renamed `smooth_arm(k)`."""
    if "sft.smoothing" not in runs:
        return arms
    k = runs["sft.smoothing"].astype(float)
    other = (runs["algorithm"] == "sft") & (k != DEFAULT_SMOOTHING)
    return arms.where(~other, k.map(smooth_arm))


def smoothing_table(rows: list[dict]) -> list[dict]:
    """The BC rows at every smoothing level (from the exponent rows of all arms)."""
    names = {("sft" if k == DEFAULT_SMOOTHING else smooth_arm(k)): k for k in SMOOTHINGS}
    keys = ("world", "learner", "exponent", "ci_low", "ci_high", "seeds", "regret_at_max_L")
    return [
        {"smoothing": names[r["algorithm"]], "algorithm": "sft", **{k: r[k] for k in keys}}
        for r in rows
        if r["algorithm"] in names
    ]


def extra_summary(rows: list[dict]) -> dict:
    """The flip-flop summary's own keys: the smoothing table and the seeds' meaning."""
    return {
        "smoothing": smoothing_table(rows),
        "world_seed": WORLD_SEED,
        "seeds_note": f"every run is in the world of seed {WORLD_SEED} (one world per preset); "
        "the seeds are data seeds (demonstrations, roll-outs, labels), so the intervals are over "
        "data only",
        "smoothing_note": "tabular BC on 50 demonstrations with add-k smoothing, k in "
        f"{list(SMOOTHINGS)} (k = {DEFAULT_SMOOTHING:g} is the `sft` arm); same seeds and world",
    }
