"""Study `compounding`: does behaviour cloning's error compound quadratically with the horizon?

Ross & Bagnell (2010): imitation by supervised learning has regret O(eps T^2) when mistakes lead
to states the expert never visits, interactive imitation (DAgger) O(eps T). We train BC and DAgger
(tabular and neural learners) and the inverse-RL methods (tabular: MaxEnt IRL, GAIL, AIRL,
IQ-Learn; the `irl` kind) in an absorbing-trap world and in a recoverable one, measure the
true-return regret J_L(expert) - J_L(model) at every prefix length L, and fit its power-law
exponent over seeds (jackknife t-interval over seeds). Expected: BC ~2 in the absorbing world,
~1 in the recoverable one; DAgger ~1 in both; inverse RL, which also sees (or solves for) the
learner's own behaviour, ~1 like DAgger but without querying an expert. A learner whose mean
regret is <= 0 at some fitted length (as good as the expert there) has no power law: its exponent
is nan, with a note. With `--world oracle` or `--world text` the same question is asked of
language-model students of a language-model expert (`irlhf.studies.compounding_lm`); with
`--world flipflop`, tabular learners in the flip-flop trap world
(`irlhf.studies.compounding_flipflop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from irlhf.algorithms.dagger import DAggerConfig
from irlhf.algorithms.gkd import GKDConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import DemoSpec, PolicySpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.irl import METHODS, IRLConfig
from irlhf.metrics.exposure import fit_power_law
from irlhf.report.figures import label, new_grid, save_figure, shared_legend, style_axes
from irlhf.studies import (
    compounding_flipflop,
    compounding_flipflop_irl,
    compounding_lm,
    flipflop_claims,
)
from irlhf.studies.base import Study, register_study
from irlhf.studies.budgets import (
    EQUAL_ARM,
    arm_column,
    budgets,
    dagger_matching_gkd,
    equal_budget_demos,
)
from irlhf.studies.common import LEARNER_NAMES
from irlhf.worlds import AutomatonSpec

WORLDS = ("absorbing", "recoverable")
IRL_ALGORITHMS = tuple(METHODS)
LABELS = LEARNER_NAMES
COLORS = {name: f"C{i}" for i, name in enumerate(LABELS)}
NO_POWER_LAW = "mean regret <= 0 at a fitted length (as good as the expert there): no power law"

# profile -> (tabular seeds, tabular horizon, neural seeds, neural horizon, neural SFT steps)
PROFILES = {
    "quick": (4, 64, 1, 32, 150),
    "default": (8, 128, 3, 32, 400),
    "full": (20, 256, 5, 128, 800),
}


def configs(profile: str, world: str = "automaton") -> Sequence[ImitationConfig | IRLConfig]:
    """The grid in `world`: automaton (tabular and neural learners, absorbing and recoverable
    traps, inverse RL) or a neural LM world (`compounding_lm.configs`).

    Budgets: tabular DAgger labels 8 rounds x 50 roll-outs; tabular `sft_equal` gets 50
    demonstrations plus one per `horizon` of DAgger's expected queries. Neural: BC takes `steps`
    optimiser steps on 50 demonstrations; GKD 2 x steps (lmbda 0.5, forward KL, batch 32);
    DAgger as many steps (fit steps / 2 in round 0 and each of 3 rounds) with roll-outs sized to
    GKD's expected oracle queries; neural `sft_equal` is BC with 2 x steps on 50 demonstrations
    plus one per `horizon` of GKD's queries."""
    if world == "flipflop":  # neural inverse RL: the full profile only (make reproduce's time)
        irl = compounding_flipflop_irl.irl_configs(profile) if profile == "full" else []
        return [*compounding_flipflop.configs(profile), *irl]
    if world != "automaton":
        return compounding_lm.configs(profile, world)
    tab_seeds, tab_horizon, nn_seeds, nn_horizon, nn_steps = PROFILES[profile]
    out: list[ImitationConfig | IRLConfig] = []
    tab_dagger = DAggerConfig()
    n_tab_equal = equal_budget_demos(50, tab_dagger.expected_queries(tab_horizon), tab_horizon)
    fit = SFTConfig(steps=nn_steps, batch_size=32, lr=3e-3)
    gkd = GKDConfig(steps=2 * nn_steps, batch_size=32, lr=3e-3, lmbda=0.5, beta=0.0)
    dagger = dagger_matching_gkd(gkd, 50, nn_horizon, rounds=3, fit_steps=nn_steps // 2)
    n_nn_equal = equal_budget_demos(50, gkd.expected_queries(50, nn_horizon), nn_horizon)
    neural_arms = {
        "sft": ("sft", 50, fit),
        "dagger": ("dagger", 50, fit),
        "gkd": ("gkd", 50, fit),
        EQUAL_ARM: ("sft", n_nn_equal, fit.model_copy(update={"steps": gkd.steps})),
    }
    for preset in WORLDS:
        for algorithm, n in (("sft", 50), ("dagger", 50), ("sft", n_tab_equal)):
            for seed in range(tab_seeds):
                spec = AutomatonSpec(preset=preset, horizon=tab_horizon, seed=seed)
                out.append(
                    ImitationConfig(
                        seed=seed, world=spec, algorithm=algorithm, demonstrations=DemoSpec(n=n)
                    )
                )
        for algorithm, n, sft in neural_arms.values():
            for seed in range(nn_seeds):
                spec = AutomatonSpec(preset=preset, horizon=nn_horizon, seed=seed)
                out.append(
                    ImitationConfig(
                        seed=seed,
                        world=spec,
                        algorithm=algorithm,
                        policy=PolicySpec(kind="causal_lm", n_layer=2, n_embd=64),
                        demonstrations=DemoSpec(n=n),
                        sft=sft,
                        dagger=dagger,
                        gkd=gkd,
                        mc_samples=512,
                    )
                )
        for algorithm in IRL_ALGORITHMS:
            for seed in range(tab_seeds):
                spec = AutomatonSpec(preset=preset, horizon=tab_horizon, seed=seed)
                out.append(IRLConfig(seed=seed, world=spec, algorithm=algorithm))
    return out


def _fit_lengths(horizon: int) -> np.ndarray:
    return 2 ** np.arange(3, int(np.log2(horizon)) + 1)


def summarize(df: pd.DataFrame, out: Path) -> dict:
    kinds = set(df["world.kind"].dropna()) if "world.kind" in df else set()
    if kinds & set(compounding_lm.WORLDS):  # a neural LM world
        return compounding_lm.summarize(df, out)
    flipflop = "flipflop" in kinds
    ok = df[df["status"] == "done"].copy()
    if "demonstrations.n" not in ok:  # IRL runs only: no BC arms
        ok["demonstrations.n"] = np.nan
    ok["arm"] = arm_column(ok, ["world.preset", "policy.kind"])
    if flipflop:  # BC at other smoothings: own arms, reported in the `smoothing` table
        ok["arm"] = compounding_flipflop.relabel_smoothing(ok, ok["arm"])
        ok, every_world = compounding_flipflop.split_world_seeds(ok)
    index = ["world.preset", "policy.kind", "arm"]
    scalars = ok[ok["L"].isna()].pivot_table(
        index=[*index, "seed"], columns="metric", values="value"
    )
    spent = {} if scalars.empty else {k: budgets(g) for k, g in scalars.groupby(level=index)}
    regret = ok[ok["metric"] == "regret"]
    rows, curves = [], {}
    for (preset, learner, algorithm), group in regret.groupby(
        ["world.preset", "policy.kind", "arm"]
    ):
        table = group.pivot_table(index="seed", columns="L", values="value")
        lengths = _fit_lengths(int(table.columns.max()))
        values = table[lengths].to_numpy()
        curves[(preset, learner, algorithm)] = table
        note = None
        try:
            fit = fit_power_law(lengths, values)
            exponent, lo, hi = fit.exponent, fit.ci_low, fit.ci_high
        except ValueError:  # a non-positive mean regret: no power law to fit
            exponent = lo = hi = float("nan")
            note = NO_POWER_LAW
        rows.append(
            {
                "world": preset,
                "learner": learner,
                "algorithm": algorithm,
                "exponent": exponent,
                "ci_low": lo,
                "ci_high": hi,
                "seeds": len(table),
                "fit_lengths": [int(x) for x in lengths],
                "regret_at_max_L": float(values[:, -1].mean()),
                **spent.get((preset, learner, algorithm), {}),
                "note": note,
            }
        )
    extra = compounding_flipflop.extra_summary(rows, ok, curves, every_world) if flipflop else {}
    rows = [r for r in rows if r["algorithm"] in LABELS]
    _figure({k: v for k, v in curves.items() if k[2] in LABELS}, out / "compounding_regret.png")
    pct = ok[(ok["metric"] == "pct_ex_acc_err") & ok["arm"].isin(list(LABELS))]
    _pct_figure(pct, out / "compounding_exacc.png")
    headline = [
        {
            "name": f"regret exponent: {r['learner']} {LABELS[r['algorithm']]}, {r['world']}",
            "value": r["exponent"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
        }
        for r in rows
    ]
    automaton_claims = {"claims": flipflop_claims.claims(rows, [], learner="tabular")}
    return {
        **({} if flipflop else automaton_claims),
        "exponents": rows,
        **({} if flipflop else {"irl_claim": _irl_claim(rows)}),
        **extra,
        "budgets": "each exponents row: demo_tokens (demonstration tokens), oracle_queries "
        "(ExpertOracle queries: roll-out expert steps and labels) and optimizer_steps (0 for "
        "tables), seed means; sft_equal is BC given the interactive arm's tokens and steps",
        "headline": headline,
        "interval": "95% jackknife t-interval over seeds (leave-one-seed-out mean curves)",
    }


def _irl_claim(rows: list[dict]) -> dict:
    """Issue 5's bar, tabular learners in the absorbing world: some IRL method's exponent is at
    most 1.3 while BC's is at least 1.7 (point estimates; the intervals are in `exponents`)."""
    absorbing = {
        r["algorithm"]: r["exponent"]
        for r in rows
        if r["world"] == "absorbing" and r["learner"] == "tabular"
    }
    bc = absorbing.get("sft", float("nan"))
    irl = {a: absorbing[a] for a in IRL_ALGORITHMS if a in absorbing}
    at_most = sorted(a for a, e in irl.items() if e <= 1.3)
    return {
        "bc_exponent": bc,
        "irl_exponents": irl,
        "irl_at_most_1_3": at_most,
        "holds": bool(bc >= 1.7 and at_most),
        "note": "IRL methods with exponent nan have mean regret <= 0 at a fitted length",
    }


def _style(learner: str, algorithm: str) -> dict:
    return {
        "linestyle": "-" if learner == "tabular" else "--",
        "color": COLORS[algorithm],
        "label": f"{LABELS[algorithm]}, {learner}",
    }


def _figure(curves: dict, path: Path) -> None:
    fig, axes = new_grid(
        "Regret vs horizon: BC compounds where traps absorb (band = seed range; "
        "curves with mean regret <= 0 are cut there)",
        1,
        len(WORLDS),
    )
    for ax, preset in zip(axes, WORLDS, strict=True):
        style_axes(
            ax,
            f"{preset} traps",
            label("prefix length L", "tokens"),
            label("regret J_L(expert) - J_L(model)", "reward units"),
        )
        for (p, learner, algorithm), table in sorted(curves.items()):
            if p != preset:
                continue
            L = table.columns.to_numpy()
            mean = table.mean(axis=0).to_numpy()
            positive = mean > 0
            style = _style(learner, algorithm)
            if not positive.any():
                style["label"] += " (mean regret <= 0 at every L: not drawn)"
            ax.plot(L[positive], mean[positive], **style)
            if len(table) > 1:
                lo, hi = table.min(axis=0).to_numpy(), table.max(axis=0).to_numpy()
                band = positive & (lo > 0)
                ax.fill_between(L[band], lo[band], hi[band], color=style["color"], alpha=0.15)
        ref = np.array([8.0, 128.0])
        ax.plot(ref, 1e-3 * ref**2, ":", color="grey", label="slope 2 (reference)")
        ax.plot(ref, 1e-3 * ref, "-.", color="grey", label="slope 1 (reference)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
    shared_legend(fig, axes)
    save_figure(fig, path)


def _pct_figure(pct: pd.DataFrame, path: Path) -> None:
    fig, axes = new_grid(
        "Excess accumulated error (Arora et al. 2022), mean over seeds", 1, len(WORLDS)
    )
    for ax, preset in zip(axes, WORLDS, strict=True):
        style_axes(
            ax,
            f"{preset} traps",
            label("prefix length L", "tokens"),
            label("%ExAccErr", "% of L x eps"),
        )
        sub = pct[pct["world.preset"] == preset]
        for (learner, algorithm), group in sub.groupby(["policy.kind", "arm"]):
            mean = group.groupby("L")["value"].mean()
            ax.plot(mean.index, mean.values, **_style(learner, algorithm))
        ax.set_xscale("log", base=2)
    shared_legend(fig, axes)
    save_figure(fig, path)


STUDY = Study(
    name="compounding",
    title="Compounding error: BC vs DAgger vs inverse RL against the horizon",
    description=__doc__.split("\n\n", 1)[1].strip(),
    configs=configs,
    summarize=summarize,
    worlds=("automaton", "flipflop", "oracle", "text"),
    descriptions=dict.fromkeys(compounding_lm.WORLDS, compounding_lm.DESCRIPTION)
    | {"flipflop": compounding_flipflop.DESCRIPTION},
    titles=dict.fromkeys(
        compounding_lm.WORLDS,
        "Compounding error: BC vs DAgger vs GKD against the prefix length",
    )
    | {"flipflop": compounding_flipflop.TITLE},
    reproduce_worlds=("automaton", "flipflop"),
)
register_study(STUDY)
