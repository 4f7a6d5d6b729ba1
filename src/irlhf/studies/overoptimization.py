"""Study `overoptimization`: optimising a learned (proxy) reward too hard lowers the true one.

Gao et al. 2022 ("Scaling laws for reward model overoptimization"): as a policy moves away from
its reference (distance d = sqrt(KL)), the proxy reward it is optimised against keeps rising while
the gold reward rises, peaks and falls, following R_bon(d) = d (a - b d) for best-of-n sampling
and R_rl(d) = d (a - b log d) for RL. Here the gold reward is the world's true return and the proxy
a Bradley-Terry reward model fitted on a limited number of comparisons of the SFT policy; best-of-n
uses the analytic KL log n - (n-1)/n, RL the exact KL-regularised optimum at decreasing kl_coef
with its exact sequence KL. Returns are reported relative to the SFT policy (d = 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from irlhf.kinds.overoptimization import OveroptimizationConfig
from irlhf.report.figures import label, new_grid, save_figure, style_axes
from irlhf.studies.base import Study, register_study
from irlhf.worlds import AutomatonSpec

PROFILES = {"quick": (2, 100), "default": (6, 100), "full": (12, 100)}
FORMS = {
    # Gao et al. 2022: gold reward as a function of d = sqrt(KL).
    "best_of_n": ("d (a - b d)", lambda d: np.stack([d, -(d**2)], axis=1)),
    "rl": ("d (a - b log d)", lambda d: np.stack([d, -d * np.log(d)], axis=1)),
}


def configs(profile: str) -> list[OveroptimizationConfig]:
    seeds, comparisons = PROFILES[profile]
    return [
        OveroptimizationConfig(
            seed=seed, world=AutomatonSpec(preset="spread", seed=seed), comparisons=comparisons
        )
        for seed in range(seeds)
    ]


def fit_form(method: str, d: np.ndarray, gold: np.ndarray) -> dict:
    """Least squares of gold on Gao et al.'s form (linear in a, b; d > 0 points only)."""
    keep = d > 0
    design = FORMS[method][1](d[keep])
    (a, b), *_ = np.linalg.lstsq(design, gold[keep], rcond=None)
    fitted = design @ np.array([a, b])
    ss_res = float(((gold[keep] - fitted) ** 2).sum())
    ss_tot = float(((gold[keep] - gold[keep].mean()) ** 2).sum())
    return {"a": float(a), "b": float(b), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")}


def summarize(df: pd.DataFrame, out: Path) -> dict:
    path = df[(df["status"] == "done") & (df["metric"] == "path")].copy()
    path["d"] = np.sqrt(path["kl"].clip(lower=0))
    fits, rows = [], []
    fig, axes = new_grid("Over-optimisation: gold vs proxy reward against sqrt(KL)", 1, 2)
    for ax, (method, (form, _)) in zip(axes, FORMS.items(), strict=True):
        sub = path[path["method"] == method]
        fit = fit_form(method, sub["d"].to_numpy(), sub["gold"].to_numpy())
        peak = sub.groupby("param")[["d", "gold", "proxy"]].mean().sort_values("d")
        fits.append({"method": method, "form": form, **fit, "points": len(sub)})
        rows += [
            {"method": method, "param": float(p), "sqrt_kl": r.d, "gold": r.gold, "proxy": r.proxy}
            for p, r in peak.iterrows()
        ]
        style_axes(
            ax,
            "best-of-n" if method == "best_of_n" else "RL (KL-regularised optimum)",
            label("d = sqrt(KL to SFT)", "sqrt nats"),
            label("reward gain over SFT", "reward units"),
        )
        ax.scatter(
            sub["d"], sub["gold"], s=8, alpha=0.35, color="C0", label="gold (true), per seed"
        )
        ax.plot(peak["d"], peak["proxy"], "o-", color="C3", label="proxy (reward model), mean")
        grid = np.linspace(max(sub["d"][sub["d"] > 0].min(), 1e-3), sub["d"].max(), 100)
        ax.plot(
            grid,
            FORMS[method][1](grid) @ np.array([fit["a"], fit["b"]]),
            "-",
            color="C0",
            label=f"gold fit {form}, R^2 = {fit['r2']:.2f}",
        )
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.legend(fontsize=7)
    save_figure(fig, out / "overoptimization.png")
    headline = [
        {
            "name": f"R^2 of {f['form']} ({f['method']})",
            "value": f["r2"],
            "ci_low": None,
            "ci_high": None,
        }
        for f in fits
    ]
    return {"fits": fits, "path": rows, "headline": headline}


STUDY = Study(
    name="overoptimization",
    title="Reward over-optimisation: gold vs proxy reward (Gao et al. 2022)",
    description=__doc__.split("\n\n", 1)[1].strip(),
    configs=configs,
    summarize=summarize,
)
register_study(STUDY)
