"""Study `reward_shift`: the Llama 2 Figure 20 analogue.

Touvron et al. 2023 (Figure 20) show the reward distribution of their SFT model and of RLHF
versions V1..V5 shifting to the right. Here the true-return distributions of a base policy
(trained on generic, unrewarded data), the SFT policy and four rounds of iterated RLHF (each round:
fresh comparisons of the current policy, reward model refitted on all so far, the policy continues
from the previous round) are sampled in the `spread` world, and their exact means tested for a
rise over rounds.

With `--world flipflop` the same picture with neural rounds (a 2 x 64 LLaMA, RLOO against a
neural reward model) in the flip-flop world (`irlhf.studies.reward_shift_flipflop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from scipy import stats

from irlhf.algorithms.rlhf import RLHFConfig
from irlhf.kinds.common import DemoSpec
from irlhf.kinds.rlhf import RLHFRunConfig
from irlhf.report.figures import label, new_figure, save_figure
from irlhf.studies import reward_shift_flipflop
from irlhf.studies.base import Study, register_study
from irlhf.worlds import AutomatonSpec

PROFILES = {"quick": (2, 500), "default": (5, 2000), "full": (10, 4000)}
ROUNDS = 4


def configs(profile: str, world: str = "automaton") -> list[RLHFRunConfig]:
    """Tabular learners in the automaton world; neural rounds with `world = "flipflop"`
    (`irlhf.studies.reward_shift_flipflop`)."""
    if world == "flipflop":
        return reward_shift_flipflop.configs(profile)
    seeds, samples = PROFILES[profile]
    return [
        RLHFRunConfig(
            seed=seed,
            world=AutomatonSpec(preset="spread", seed=seed),
            demonstrations=DemoSpec(n=100, temperature=1.0),
            rlhf=RLHFConfig(rounds=ROUNDS, comparisons_per_round=300, anchor="previous"),
            return_samples=samples,
        )
        for seed in range(seeds)
    ]


def _order(name: str) -> tuple[int, int]:
    return (0, 0) if name == "base" else (1, 0) if name == "sft" else (2, int(name.split("_")[1]))


def summarize(df: pd.DataFrame, out: Path) -> dict:
    ok = df[df["status"] == "done"]
    if "world.kind" in ok and (ok["world.kind"] == "flipflop").any():
        return reward_shift_flipflop.summarize(ok, out)
    samples = ok[ok["metric"] == "return_sample"]
    names = sorted(samples["model"].unique(), key=_order)
    models = []
    for name in names:
        values = samples.loc[samples["model"] == name, "value"].to_numpy()
        p10, p50, p90 = np.quantile(values, [0.1, 0.5, 0.9])
        models.append(
            {"name": name, "mean": float(values.mean()), "p10": p10, "p50": p50, "p90": p90}
        )

    # Exact J per seed and model: does the mean rise over the RLHF rounds?
    exact = ok[ok["metric"] == "j"].pivot_table(index="seed", columns="model", values="value")
    rounds = [n for n in names if n.startswith("rlhf_")]
    steps = np.diff(exact[["sft", *rounds]].to_numpy(), axis=1)  # (seeds, rounds)
    rise = stats.ttest_1samp(steps.ravel(), 0.0, alternative="greater")
    exact_rows = [
        {"name": n, "j_mean": float(exact[n].mean()), "j_sd": float(exact[n].std(ddof=1))}
        for n in names
    ]

    fig, ax = new_figure(
        "True-return distributions: base, SFT and RLHF rounds (Llama 2 Fig. 20 analogue)",
        label("true return of a sampled sequence", "reward units"),
        label("density", "1 / reward unit"),
        size=(8.0, 4.6),
    )
    bins = np.linspace(samples["value"].min(), samples["value"].max(), 60)
    colors = {"base": "grey", "sft": "black"}
    for i, name in enumerate(names):
        values = samples.loc[samples["model"] == name, "value"]
        color = colors.get(name, f"C{i}")
        ax.hist(
            values,
            bins=cast("Sequence[float]", bins),  # an array of edges
            density=True,
            histtype="step",
            linewidth=1.4,
            color=color,
            label=f"{name} (mean {values.mean():.1f})",
        )
    ax.legend(fontsize=8)
    save_figure(fig, out / "reward_shift.png")
    headline = [
        {
            "name": f"mean true return, {r['name']}",
            "value": r["j_mean"],
            "ci_low": None,
            "ci_high": None,
        }
        for r in exact_rows
    ]
    increases = steps.mean(axis=0)
    claims = [
        {
            "claim": "the mean true return rises over the RLHF rounds",
            "verdict": "holds" if rise.pvalue < 0.05 else "inconclusive",
            "evidence": f"mean per-round increases {', '.join(f'{x:+.2f}' for x in increases)}; "
            f"one-sided t-test over seeds and rounds p = {rise.pvalue:.2g} (holds at p < 0.05)",
        }
    ]
    return {
        "claims": claims,
        "models": models,
        "exact": exact_rows,
        "means_rise": {
            "per_round_increases": steps.mean(axis=0).tolist(),
            "fraction_of_increases": float((steps > 0).mean()),
            "one_sided_t_pvalue": float(rise.pvalue),
        },
        "headline": headline,
    }


STUDY = Study(
    name="reward_shift",
    title="Reward distributions of SFT vs RLHF rounds (Llama 2, Figure 20)",
    description=__doc__.split("\n\n", 1)[1].strip(),
    configs=configs,
    summarize=summarize,
    worlds=("automaton", "flipflop"),
    reproduce_worlds=("automaton", "flipflop"),
    descriptions={"flipflop": reward_shift_flipflop.DESCRIPTION},
    titles={"flipflop": reward_shift_flipflop.TITLE},
)
register_study(STUDY)
