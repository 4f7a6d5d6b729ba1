"""Study `decomposition`: how much of RLHF's gain over SFT is just exposure bias fixed?

The essay's question. SFT (behaviour cloning) imitates the demonstrator on the demonstrator's
states only, so its mistakes compound on its own (Ross & Bagnell 2010). Exposure-only fixes
imitate the *same* demonstrator while seeing the learner's own behaviour: DAgger with the
demonstrator as its oracle (Ross et al. 2011) and inverse RL (MaxEnt IRL, Ziebart et al. 2008;
GAIL, Ho & Ermon 2016; AIRL, Fu et al. 2018; IQ-Learn, Garg et al. 2021). They can close SFT's gap
to the demonstrator, but, being imitation, should not exceed it. RLHF from SFT (Christiano et al.
2017; Ouyang et al. 2022) learns a reward from comparisons and optimises it, so it can go beyond
the demonstrations. Across demonstrator temperatures in the `spread` world (the expert has
alpha = 1, so the temperature changes the demonstrator's return), we measure the exact true
returns J of SFT, DAgger, each IRL method and RLHF, beside the demonstrator, the expert and the
optimum (95% t-intervals over seeds; each seed is its own world), and split RLHF's gain:

    exposure_share = (J_best_exposure_only - J_SFT) / (J_RLHF - J_SFT),  beyond_share = 1 - it,

the best exposure-only method chosen by its mean J among DAgger and the IRL methods. The shares
are nan when RLHF does not improve on SFT (J_RLHF <= J_SFT: no gain to split); exposure_share
> 1 means an exposure-only method beat RLHF, < 0 that none beat SFT. The paired gaps
J_method - J_demonstrator (t-intervals over seeds) test "approach but do not exceed".
Budgets: DAgger queries its oracle (the demonstrator) at every roll-out step it labels; the
`sft_equal` row is BC given as many demonstration tokens as DAgger's demonstrations plus queries
(an answer to "is DAgger's edge only its extra data?"); it is not an exposure-only fix and is
not a candidate for the best one.

With `--world flipflop` the same split with neural learners (a 2 x 64 LLaMA; neural RLHF, DAgger
and GKD imitating the demonstrator) in the flip-flop world (`irlhf.studies.decomposition_flipflop`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from irlhf.algorithms.dagger import DAggerConfig
from irlhf.algorithms.rlhf import RLHFConfig
from irlhf.kinds.common import DemoSpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.irl import METHODS as IRL_METHODS
from irlhf.kinds.irl import IRLConfig
from irlhf.kinds.rlhf import RLHFRunConfig
from irlhf.report.figures import label, new_grid, save_figure, style_axes
from irlhf.studies import decomposition_flipflop
from irlhf.studies.base import Study, register_study
from irlhf.studies.budgets import EQUAL_ARM, equal_budget_demos
from irlhf.studies.common import LEARNER_NAMES
from irlhf.studies.intervals import t_interval, verdict
from irlhf.worlds import AutomatonSpec

# profile -> (seeds, demonstrator temperatures)
PROFILES = {
    "quick": (2, (0.1, 2.0)),
    "default": (5, (0.1, 0.25, 0.5, 1.0, 2.0)),
    "full": (10, (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)),
}
DEMONSTRATIONS = 20
"""Demonstration sequences per run (every method sees the same ones: same seed). Few enough that
SFT has an imitation gap to close (measured on 3 seeds: J_SFT - J_demonstrator ~ -8 with 10
demonstrations, -3 with 30, < 1 with 100, where there is little exposure bias left to fix)."""
COMPARISONS = 1000
"""RLHF's annotator comparisons (one round, on SFT's samples)."""

EXPOSURE_ONLY = ("dagger", *IRL_METHODS)
METHODS = ("sft", EQUAL_ARM, *EXPOSURE_ONLY, "rlhf")
REFERENCES = ("demonstrator", "expert", "optimum")
LABELS = {
    **LEARNER_NAMES,
    EQUAL_ARM: "BC at DAgger's budget",
    "dagger": "DAgger (demonstrator oracle)",
    "rlhf": "RLHF from SFT",
}
COLORS = {name: f"C{i}" for i, name in enumerate(METHODS)}
REFERENCE_STYLE: dict[str, dict[str, Any]] = {  # matplotlib keyword arguments
    "demonstrator": {"color": "black", "linestyle": "--"},
    "expert": {"color": "dimgrey", "linestyle": ":"},
    "optimum": {"color": "black", "linestyle": "-"},
}
NO_GAIN = "J_RLHF <= J_SFT: no RLHF gain to split, shares are nan"
CAVEATS = [
    "the best exposure-only method is the largest of five noisy seed means: an optimistic pick, "
    "so exposure_share leans high",
    "j_ci_* are over seeds that are different worlds (wide); gaps_to_demonstrator are paired by "
    "seed and are the test of 'approach but do not exceed'",
    "IRL methods, DAgger and RLHF run at their module defaults (not tuned per temperature); RLHF: "
    f"one round of {COMPARISONS} comparisons",
    "SFT is the RLHF run's own starting policy (the same demonstrations and fit)",
]


def configs(
    profile: str, world: str = "automaton"
) -> list[ImitationConfig | IRLConfig | RLHFRunConfig]:
    """The tabular grid in the automaton world; neural learners with `world = "flipflop"`
    (`irlhf.studies.decomposition_flipflop`)."""
    if world == "flipflop":
        return decomposition_flipflop.configs(profile)
    seeds, temperatures = PROFILES[profile]
    return grid(seeds, temperatures)


def grid(
    seeds: int,
    temperatures: tuple[float, ...],
    world: AutomatonSpec = AutomatonSpec(preset="spread"),
) -> list[ImitationConfig | IRLConfig | RLHFRunConfig]:
    """Per temperature and seed (world seed = seed): DAgger with the demonstrator as its oracle,
    BC at DAgger's budget, each IRL method, and RLHF from SFT, all on the same demonstrations."""
    out: list[ImitationConfig | IRLConfig | RLHFRunConfig] = []
    n_equal = equal_budget_demos(
        DEMONSTRATIONS, DAggerConfig().expected_queries(world.horizon), world.horizon
    )
    for temperature in temperatures:
        demos = DemoSpec(n=DEMONSTRATIONS, temperature=temperature)
        for seed in range(seeds):
            common = {"seed": seed, "world": world.replace(seed=seed), "demonstrations": demos}
            out.append(ImitationConfig(algorithm="dagger", oracle="demonstrator", **common))
            more = demos.model_copy(update={"n": n_equal})
            out.append(ImitationConfig(**(common | {"demonstrations": more})))
            out += [IRLConfig(algorithm=name, **common) for name in IRL_METHODS]
            # SFT is the RLHF run's own starting point (the same demonstrations and fit).
            out.append(RLHFRunConfig(rlhf=RLHFConfig(comparisons_per_round=COMPARISONS), **common))
    return out


def returns_table(df: pd.DataFrame) -> pd.DataFrame:
    """[(demo_temperature, seed) x (methods + references)] exact true returns J per run."""
    ok = df[df["status"] == "done"].rename(columns={"demonstrations.temperature": "temperature"})
    # the imitation kind's BC runs are the equal-budget arm (SFT is the RLHF run's start)
    learners = ok[ok["metric"] == "j_model"].assign(
        method=lambda d: d["algorithm"].replace({"sft": EQUAL_ARM})
    )
    rlhf = ok[ok["kind"] == "rlhf"]
    models = rlhf[rlhf["metric"] == "j"]
    final = max((m for m in models["model"].unique() if m.startswith("rlhf_")), key=_round)
    named = {
        "sft": models[models["model"] == "sft"],
        "rlhf": models[models["model"] == final],
        "demonstrator": rlhf[rlhf["metric"] == "j_demonstrator"],
        "expert": rlhf[rlhf["metric"] == "j_expert"],
        "optimum": rlhf[rlhf["metric"] == "j_optimal"],
    }
    long = pd.concat(
        [learners, *(rows.assign(method=name) for name, rows in named.items())],
        ignore_index=True,
    )
    return long.pivot_table(index=["temperature", "seed"], columns="method", values="value")


def _round(model: str) -> int:
    return int(model.split("_")[1])


def _share(j: pd.DataFrame, best: str) -> float:
    gain = j["rlhf"].mean() - j["sft"].mean()
    return float((j[best].mean() - j["sft"].mean()) / gain) if gain > 0 else float("nan")


def _share_interval(j: pd.DataFrame, best: str, n: int = 2000) -> tuple[float, float]:
    """95% percentile bootstrap of exposure_share over seeds (paired, best method fixed); nan
    when more than 5% of the resamples have no RLHF gain."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(j), size=(n, len(j)))
    sft, rlhf, top = (j[c].to_numpy()[picks].mean(axis=1) for c in ("sft", "rlhf", best))
    gain = rlhf - sft
    if len(j) < 2 or (gain <= 0).mean() > 0.05:
        return float("nan"), float("nan")
    shares = (top - sft)[gain > 0] / gain[gain > 0]
    low, high = np.quantile(shares, [0.025, 0.975])
    return float(low), float(high)


def summarize(df: pd.DataFrame, out: Path) -> dict:
    done = df[df["status"] == "done"]
    if "world.kind" in done and (done["world.kind"] == "flipflop").any():
        return decomposition_flipflop.summarize(done, out)
    table = returns_table(df)
    rows, gaps, shares = [], [], []
    for temperature, j in table.groupby(level="temperature"):
        for method in (*METHODS, *REFERENCES):
            mean, low, high = t_interval(j[method].to_numpy())
            rows.append(
                {
                    "demo_temperature": float(temperature),
                    "method": method,
                    "j_mean": mean,
                    "j_ci_low": low,
                    "j_ci_high": high,
                    "seeds": len(j),
                }
            )
        for method in METHODS:
            mean, low, high = t_interval((j[method] - j["demonstrator"]).to_numpy())
            gaps.append(
                {
                    "demo_temperature": float(temperature),
                    "method": method,
                    "gap_mean": mean,
                    "gap_ci_low": low,
                    "gap_ci_high": high,
                    "verdict": _verdict(low, high),
                }
            )
        best = max(EXPOSURE_ONLY, key=lambda m: j[m].mean())
        share = _share(j, best)
        low, high = _share_interval(j, best)
        shares.append(
            {
                "demo_temperature": float(temperature),
                "exposure_share": share,
                "beyond_share": 1.0 - share,
                "exposure_share_ci_low": low,
                "exposure_share_ci_high": high,
                "best_exposure_only": best,
                "j_sft": float(j["sft"].mean()),
                "j_best_exposure_only": float(j[best].mean()),
                "j_rlhf": float(j["rlhf"].mean()),
                "j_demonstrator": float(j["demonstrator"].mean()),
                "note": NO_GAIN if np.isnan(share) else None,
            }
        )
    _figure(pd.DataFrame(rows), pd.DataFrame(gaps), pd.DataFrame(shares), out / "decomposition.png")
    return {
        "claims": _claims(shares, gaps),
        "rows": rows,
        "shares": shares,
        "gaps_to_demonstrator": gaps,
        "story": _story(gaps),
        "headline": _headline(shares, gaps),
        "interval": "95% t-interval over seeds (shares: 95% paired percentile bootstrap)",
        "shares_definition": "exposure_share = (J_best_exposure_only - J_SFT) / (J_RLHF - J_SFT),"
        " beyond_share = 1 - exposure_share; " + NO_GAIN,
        "caveats": CAVEATS,
    }


def _claims(shares: list[dict], gaps: list[dict]) -> list[dict]:
    """The essay's two claims here, with verdicts from the intervals: the exposure share falls
    from the most greedy to the noisiest demonstrator (their intervals apart), and RLHF goes
    beyond the noisiest demonstrator (the paired gap's interval above 0)."""
    out = []
    defined = [s for s in shares if np.isfinite(s["exposure_share"])]
    if len(defined) >= 2:
        greedy, noisy = defined[0], defined[-1]  # temperatures ascend
        lo, hi = "exposure_share_ci_low", "exposure_share_ci_high"
        out.append(
            {
                "claim": "the exposure share of RLHF's gain falls as the demonstrations get "
                f"noisier (T = {greedy['demo_temperature']:g} -> {noisy['demo_temperature']:g})",
                "verdict": verdict(greedy[lo] - noisy[hi], greedy[hi] - noisy[lo]),
                "evidence": f"{greedy['exposure_share']:.2f} [{greedy[lo]:.2f}, {greedy[hi]:.2f}]"
                f" -> {noisy['exposure_share']:.2f} [{noisy[lo]:.2f}, {noisy[hi]:.2f}] "
                "(intervals apart = holds)",
            }
        )
    noisiest = max((g["demo_temperature"] for g in gaps), default=None)
    for g in gaps:
        if g["method"] == "rlhf" and g["demo_temperature"] == noisiest:
            out.append(
                {
                    "claim": f"RLHF goes beyond the demonstrator at T = {noisiest:g}",
                    "verdict": verdict(g["gap_ci_low"], g["gap_ci_high"]),
                    "evidence": f"J(RLHF) - J(demonstrator) {g['gap_mean']:.2f} "
                    f"[{g['gap_ci_low']:.2f}, {g['gap_ci_high']:.2f}]",
                }
            )
    return out


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return "above demonstrator"
    if high < 0:
        return "below demonstrator"
    return "indistinguishable from demonstrator"


def _story(gaps: list[dict]) -> dict:
    """Where the paired 95% interval of J_method - J_demonstrator lies, per temperature."""

    def where(methods: tuple[str, ...], verdict: str) -> list[str]:
        return [
            f"{g['method']} at T={g['demo_temperature']:g}"
            for g in gaps
            if g["method"] in methods and g["verdict"] == verdict
        ]

    return {
        "exposure_only_above_demonstrator": where(EXPOSURE_ONLY, "above demonstrator"),
        "exposure_only_below_demonstrator": where(EXPOSURE_ONLY, "below demonstrator"),
        "rlhf_above_demonstrator": where(("rlhf",), "above demonstrator"),
        "sft_below_demonstrator": where(("sft",), "below demonstrator"),
    }


def _headline(shares: list[dict], gaps: list[dict]) -> list[dict]:
    lines = [
        {
            "name": f"exposure share of RLHF's gain over SFT, T={s['demo_temperature']:g} "
            f"(best exposure-only: {s['best_exposure_only']})",
            "value": s["exposure_share"],
            "ci_low": s["exposure_share_ci_low"],
            "ci_high": s["exposure_share_ci_high"],
        }
        for s in shares
    ]
    for method in ("rlhf", *EXPOSURE_ONLY):
        best = max((g for g in gaps if g["method"] == method), key=lambda g: g["gap_mean"])
        lines.append(
            {
                "name": f"largest J({method}) - J(demonstrator), at T={best['demo_temperature']:g}",
                "value": best["gap_mean"],
                "ci_low": best["gap_ci_low"],
                "ci_high": best["gap_ci_high"],
            }
        )
    return lines


def _figure(rows: pd.DataFrame, gaps: pd.DataFrame, shares: pd.DataFrame, path: Path) -> None:
    temperatures = sorted(rows["demo_temperature"].unique())
    greedy = min(temperatures)
    ticks = [f"T={t:g}" + (" (near-greedy)" if t == greedy else "") for t in temperatures]
    x = np.arange(len(temperatures))
    xlabel = label("demonstrator temperature T", "multiple of the expert's alpha")
    fig, (returns_ax, gaps_ax) = new_grid(
        "Decomposition of RLHF's gain over SFT (spread world; error bars: 95% t-interval over "
        "seeds, each seed its own world)",
        2,
        1,
        panel_size=(12.0, 4.6),
    )
    # (a) The true returns, with the reference policies marked per temperature.
    style_axes(
        returns_ax, "True return of each method", xlabel, label("true return J", "reward units")
    )
    by_method = rows.set_index(["method", "demo_temperature"])
    _grouped_bars(returns_ax, x, by_method, temperatures, "j_mean", "j_ci_low", "j_ci_high")
    references = {r: by_method.loc[r].loc[temperatures, "j_mean"].to_numpy() for r in REFERENCES}
    _reference_marks(returns_ax, x, references)
    returns_ax.set_xticks(x, ticks)
    returns_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))

    # (b) Paired gaps to the demonstrator: "approach but do not exceed" vs "go beyond".
    style_axes(
        gaps_ax,
        "J(method) - J(demonstrator), paired by seed (label: exposure share of RLHF's gain)",
        xlabel,
        label("gap to the demonstrator", "reward units"),
    )
    by_gap = gaps.set_index(["method", "demo_temperature"])
    _grouped_bars(gaps_ax, x, by_gap, temperatures, "gap_mean", "gap_ci_low", "gap_ci_high")
    relative = {r: v - references["demonstrator"] for r, v in references.items()}
    _reference_marks(gaps_ax, x, relative)
    shares = shares.set_index("demo_temperature")
    top = np.nanmax(by_gap["gap_ci_high"].to_numpy(dtype=float))
    for k, temperature in enumerate(temperatures):
        share, best = shares.loc[temperature, ["exposure_share", "best_exposure_only"]]
        text = "share n/a" if np.isnan(share) else f"exposure share {share:.2f}"
        gaps_ax.annotate(f"{text}\n(best: {best})", (x[k], top), ha="center", fontsize=7)
    gaps_ax.set_xticks(x, ticks)
    gaps_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, path)


def _grouped_bars(
    ax: Axes,
    x: np.ndarray,
    table: pd.DataFrame,
    temperatures: list[float],
    mean: str,
    low: str,
    high: str,
) -> None:
    """One bar per method in each temperature group, with asymmetric interval error bars."""
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        sub = table.loc[method].loc[temperatures]
        centre = sub[mean].to_numpy()
        err = np.stack([centre - sub[low].to_numpy(), sub[high].to_numpy() - centre])
        ax.bar(
            x + (i - (len(METHODS) - 1) / 2) * width,
            centre,
            width,
            yerr=np.nan_to_num(err),
            capsize=2,
            color=COLORS[method],
            label=LABELS[method],
        )


def _reference_marks(ax: Axes, x: np.ndarray, values: dict[str, np.ndarray]) -> None:
    """A horizontal segment across each temperature group per reference policy (seed mean)."""
    for reference, ys in values.items():
        for k, y in enumerate(ys):
            ax.plot(
                [x[k] - 0.45, x[k] + 0.45],
                [y, y],
                linewidth=1.6,
                label=f"{reference} (mean)" if k == 0 else "_nolegend_",
                **REFERENCE_STYLE[reference],
            )


STUDY = Study(
    name="decomposition",
    title="How much of RLHF's gain is exposure bias fixed?",
    description=__doc__.split("\n\n", 1)[1].strip(),
    configs=configs,
    summarize=summarize,
    worlds=("automaton", "flipflop"),
    reproduce_worlds=("automaton", "flipflop"),
    descriptions={"flipflop": decomposition_flipflop.DESCRIPTION},
    titles={"flipflop": decomposition_flipflop.TITLE},
)
register_study(STUDY)
