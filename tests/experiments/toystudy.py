"""A toy study over the counter kind, for the study, report and CLI tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from toykind import CounterConfig

from irlhf.report.figures import label, new_figure, save_figure
from irlhf.studies.base import Study, register_study

SIZES = {"quick": 2, "default": 3, "full": 4}


def configs(profile: str) -> list[CounterConfig]:
    return [CounterConfig(seed=seed, steps=6) for seed in range(SIZES[profile])]


def summarize(table: pd.DataFrame, out: Path) -> dict:
    totals = table[table["metric"] == "total"].sort_values("seed")
    mean, sd = totals["value"].mean(), totals["value"].std(ddof=1)
    half = 2 * sd / len(totals) ** 0.5
    fig, ax = new_figure("Total by seed", label("seed", "index"), label("total", "reward units"))
    ax.plot(totals["seed"], totals["value"], marker="o", label="counter")
    ax.axhline(mean, linestyle="--", color="grey", label="mean")
    ax.legend()
    save_figure(fig, out / "totals.png")
    return {
        "headline": [
            {"name": "mean total", "value": mean, "ci_low": mean - half, "ci_high": mean + half}
        ],
        "per_seed": totals[["seed", "value"]].to_dict("records"),
        "n_runs": len(totals),
    }


STUDY = Study(
    name="toy",
    title="Counters add up",
    description="A toy claim: the total of six uniform draws per step is about nine.",
    configs=configs,
    summarize=summarize,
)
register_study(STUDY)
