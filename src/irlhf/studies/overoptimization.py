"""Study `overoptimization`: optimising a learned (proxy) reward too hard lowers the true one.

Gao et al. 2022 ("Scaling laws for reward model overoptimization"): as a policy moves away from
its reference (distance d = sqrt(KL)), the proxy reward it is optimised against keeps rising while
the gold reward rises, peaks and falls, following R_bon(d) = d (a - b d) for best-of-n sampling
and R_rl(d) = d (a - b log d) for RL. Here the gold reward is the world's true return and the proxy
a Bradley-Terry reward model fitted on a limited number of comparisons of the SFT policy; best-of-n
uses the analytic KL log n - (n-1)/n, RL the exact KL-regularised optimum at decreasing kl_coef
with its exact sequence KL. Returns are reported relative to the SFT policy (d = 0).

The summary's `claims` decide, from 95% t-intervals over seeds (each seed is one world, reward
model and path), what Gao et al. claim and this grid can test: along the RL path the proxy reward
keeps rising past the gold peak while the gold reward falls from it, and at the largest KL of each
path the proxy exceeds the gold reward (over-optimisation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from irlhf.kinds.overoptimization import OveroptimizationConfig
from irlhf.report.figures import label, new_grid, save_figure, style_axes
from irlhf.studies.base import Study, register_study
from irlhf.studies.intervals import t_interval, verdict
from irlhf.worlds import AutomatonSpec

PROFILES = {"quick": (2, 100), "default": (6, 100), "full": (12, 100)}
FORMS = {
    # Gao et al. 2022: gold reward as a function of d = sqrt(KL).
    "best_of_n": ("d (a - b d)", lambda d: np.stack([d, -(d**2)], axis=1)),
    "rl": ("d (a - b log d)", lambda d: np.stack([d, -d * np.log(d)], axis=1)),
}
PARAM_NAMES = {"best_of_n": "n", "rl": "kl_coef"}


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
    return {
        "claims": claims(path),
        "fits": fits,
        "path": rows,
        "headline": headline,
        "interval": "95% t-interval over seeds, paired by seed",
    }


def claims(path: pd.DataFrame) -> list[dict]:
    """Gao et al.'s claims this grid decides, each from a paired 95% t-interval over seeds.

    `path`: the `path` records (columns seed, method, param, kl, gold, proxy). For RL, the gold
    peak is the param, other than the largest KL's, with the largest seed-mean gold; the claims
    are proxy(largest KL) - proxy(peak) > 0 and gold(peak) - gold(largest KL) > 0. For both
    paths, proxy - gold > 0 at the largest KL. One seed gives no interval: "inconclusive". The
    peak is picked on the same seeds, which favours "falls" a little; RL's returns are exact, so
    the only noise it picks on is between seeds.
    """
    out = []
    for method in FORMS:
        sub = path[path["method"] == method]
        if sub.empty:
            continue
        gold = sub.pivot_table(index="seed", columns="param", values="gold")  # (seeds, params)
        proxy = sub.pivot_table(index="seed", columns="param", values="proxy")
        by_kl = sub.groupby("param")["kl"].mean().sort_values()
        last = by_kl.index[-1]
        name = PARAM_NAMES[method]
        at_last = f"{name} = {last:g}, sqrt(KL) = {np.sqrt(max(by_kl[last], 0)):.2f}"
        if method == "rl" and len(by_kl) >= 2:
            peak = gold[by_kl.index[:-1]].mean().idxmax()
            at_peak = f"{name} = {peak:g}, sqrt(KL) = {np.sqrt(max(by_kl[peak], 0)):.2f}"
            rise = (proxy[last] - proxy[peak]).dropna().to_numpy()
            fall = (gold[peak] - gold[last]).dropna().to_numpy()
            out.append(
                _claim(
                    f"RL: the proxy reward keeps rising past the gold peak ({at_peak} -> "
                    f"{at_last})",
                    rise,
                    "proxy(largest KL) - proxy(gold peak)",
                )
            )
            out.append(
                _claim(
                    f"RL: the gold reward peaks and falls ({at_peak} -> {at_last})",
                    fall,
                    "gold(gold peak) - gold(largest KL)",
                )
            )
        gap = (proxy[last] - gold[last]).dropna().to_numpy()
        title = "best-of-n" if method == "best_of_n" else "RL"
        out.append(
            _claim(
                f"{title}: the proxy reward exceeds the gold reward at the largest KL "
                f"({at_last}): over-optimisation",
                gap,
                "proxy - gold",
            )
        )
    return out


def _claim(claim: str, paired: np.ndarray, quantity: str) -> dict:
    """A claim "the paired per-seed `quantity` is above 0", decided by its 95% t-interval."""
    mean, low, high = t_interval(paired)
    seeds = int(np.isfinite(paired).sum())
    if np.isnan(low):
        evidence = f"{quantity} {mean:.2f} on {seeds} seed(s): no interval (needs 2 seeds)"
    else:
        evidence = f"{quantity} {mean:.2f} [{low:.2f}, {high:.2f}], {seeds} seeds"
    return {"claim": claim, "verdict": verdict(low, high), "evidence": evidence}


STUDY = Study(
    name="overoptimization",
    title="Reward over-optimisation: gold vs proxy reward (Gao et al. 2022)",
    description=__doc__.split("\n\n", 1)[1].strip(),
    configs=configs,
    summarize=summarize,
)
register_study(STUDY)
