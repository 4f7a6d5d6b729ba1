"""Study `recovery`: does a learner recover from a mistake, or does the mistake stay with it?

He et al. (2021) argue that language models "might self-correct": a perturbed prefix leaves a
trace that fades. In a world whose traps absorb, a mistake should not fade for an imitation
learner that never saw a trap; where every token leaves a trap, it should fade at once. Per world
preset and learner, the self-recovery probe (`irlhf.metrics.recovery`: the expert's least likely
token replaces one expert token after 8, the learner continues 64 steps) gives the excess
per-step regret against the unperturbed prefix at each distance d and its half-life (the first d
at which the excess falls below half its value at d = 1; 2 is the fastest). Each seed is a
learner trained on its own demonstrations in one world (world seed 0); the summary's half-life is
the mean over seeds with a 95% t-interval (a seed whose half-life is +inf, no recovery within 64
steps, makes the mean +inf, with a note). Expected: absorbing slow, recoverable fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from irlhf.kinds.common import DemoSpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.recovery import ProbeSpec, RecoveryConfig
from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.report.figures import label, new_grid, save_figure, style_axes
from irlhf.studies.base import Study, register_study
from irlhf.studies.intervals import t_interval
from irlhf.worlds import AutomatonSpec

PRESETS = ("absorbing", "recoverable")
WORLD_SEED = 0
# profile -> (seeds, prefixes per probe)
PROFILES = {"quick": (2, 400), "default": (4, 1000), "full": (8, 2000)}
LEARNERS = {"sft": "BC (SFT)", "dagger": "DAgger"}
NO_RECOVERY = "some seed does not recover within the probe's horizon: half-life +inf"


def configs(profile: str, world: str = "flipflop") -> list[RecoveryConfig]:
    """Tabular BC and DAgger per preset and data seed, in one world (seed 0)."""
    seeds, n_prefixes = PROFILES[profile]
    out = []
    for preset in PRESETS:
        if world == "flipflop":
            spec: FlipFlopWorldSpec | AutomatonSpec = FlipFlopWorldSpec(
                preset=preset, horizon=128, seed=WORLD_SEED
            )
        else:
            spec = AutomatonSpec(preset=preset, horizon=128, seed=WORLD_SEED)
        for algorithm in LEARNERS:
            for seed in range(seeds):
                learner = ImitationConfig(
                    seed=seed, world=spec, algorithm=algorithm, demonstrations=DemoSpec(n=50)
                )
                probe = ProbeSpec(n_prefixes=n_prefixes)
                out.append(RecoveryConfig(seed=seed, learner=learner, probe=probe))
    return out


def summarize(df: pd.DataFrame, out: Path) -> dict:
    ok = df[df["status"] == "done"]
    kinds = ok["learner.world.kind"] if "learner.world.kind" in ok else pd.Series(dtype=object)
    world = "flipflop" if (kinds == "flipflop").any() else "automaton"
    rows, curves = [], {}
    for (preset, algorithm), runs in ok.groupby(["learner.world.preset", "learner.algorithm"]):
        per_seed = runs[runs["metric"] == "half_life_regret"].set_index("seed")["value"]
        excess = runs[runs["metric"] == "excess_regret"]
        curves[(preset, algorithm)] = excess.groupby("d")["value"].mean()
        note = None
        if np.isinf(per_seed.to_numpy()).any():
            mean = low = high = float("inf")
            note = NO_RECOVERY
        else:
            mean, low, high = t_interval(per_seed.to_numpy())
        undefined = runs["seed"].nunique() - len(per_seed)
        if undefined:
            note = f"{undefined} seed(s) with nothing to recover from (excess at d = 1 <= 0)"
        rows.append(
            {
                "world": world,
                "preset": preset,
                "learner": "tabular",
                "algorithm": algorithm,
                "half_life": mean,
                "ci_low": low,
                "ci_high": high,
                "seeds": int(len(per_seed)),
                "excess_regret_at_1": float(curves[(preset, algorithm)].iloc[0]),
                "note": note,
            }
        )
    by = {(r["preset"], r["algorithm"]): r for r in rows}
    bc_abs, bc_rec = by.get(("absorbing", "sft")), by.get(("recoverable", "sft"))
    claim = None
    if bc_abs and bc_rec:
        claim = {
            "claim": "BC's half-life is longer where traps absorb than where they do not",
            "holds": bool(bc_abs["ci_low"] > bc_rec["ci_high"]),
            "absorbing": [bc_abs["half_life"], bc_abs["ci_low"], bc_abs["ci_high"]],
            "recoverable": [bc_rec["half_life"], bc_rec["ci_low"], bc_rec["ci_high"]],
        }
    _figure(curves, out / "recovery_curves.png")
    headline = [
        {
            "name": f"recovery half-life: {LEARNERS[r['algorithm']]}, {r['preset']} ({world})",
            "value": r["half_life"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
        }
        for r in rows
    ]
    return {
        "world": world,
        "world_seed": WORLD_SEED,
        "rows": rows,
        "claim": claim,
        "headline": headline,
        "interval": "95% t-interval over data seeds of the per-seed half-lives",
    }


def _figure(curves: dict, path: Path) -> None:
    fig, axes = new_grid("Excess per-step regret after one perturbed token (mean over seeds)", 1, 2)
    for ax, preset in zip(axes, PRESETS, strict=True):
        style_axes(
            ax,
            f"{preset} traps",
            label("distance after the perturbation d", "tokens"),
            label("excess regret", "reward units per step"),
        )
        for (p, algorithm), curve in sorted(curves.items()):
            if p == preset:
                ax.plot(curve.index, curve.to_numpy(), label=LEARNERS[algorithm])
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.legend(fontsize=7)
    save_figure(fig, path)


STUDY = Study(
    name="recovery",
    title="Self-recovery: how long a mistake stays with the learner",
    description=__doc__.split("\n\n", 1)[1].strip(),
    configs=configs,
    summarize=summarize,
    worlds=("flipflop", "automaton"),
)
register_study(STUDY)
