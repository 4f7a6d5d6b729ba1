"""Study `compounding` in a neural LM world (`irlhf study compounding --world oracle|text`).

The expert is a language model — the random oracle GPT-2 of the SeqGAN/Texygen set-up, or the
Shakespeare teacher — so its next-token distribution is exact at every prefix and exposure bias
is measured as Arora et al. (2022) did with GPT-2: the per-step loss is KL(expert || model) at a
prefix; eps_<=L averages it over the expert's own prefixes, R_<=L sums it along the model's own
generations, AccErr_<=L = R_<=L / eps_<=L and %ExAccErr_<=L = (R_<=L - L eps_<=L) / (L eps_<=L).
Students of one size are trained from the same demonstrations (the expert's samples) by
behaviour cloning (SFT), by DAgger (roll-outs of the per-step mixture of the expert and the
student, every visited prefix labelled by the expert through the `ExpertOracle` channel with a
sampled token, labels aggregated) and by GKD (on-policy distillation: each step a batch of the
student's own samples with probability 0.5, else of the demonstrations, labelled with the
expert's full distribution, forward KL; nothing aggregated). Budgets: GKD and DAgger take
2 x `steps` optimiser steps and about the same oracle queries (DAgger's roll-outs are sized to
GKD's expected queries); BC takes `steps` steps on the demonstrations, and the equal-budget BC
arm (`sft_equal`) 2 x `steps` steps on as many demonstration tokens as GKD's demonstrations and
queries together. Every arm's demonstration tokens, oracle queries and optimiser steps are in
the summary.
Per learner:
the growth exponent of AccErr_<=L and of R_<=L against L on log-log axes (jackknife t-interval
over seeds), and at the longest L the eps, AccErr, %ExAccErr, the gold-reward regret
J_L(expert) - J_L(model) and the NLL-oracle of the student's samples with 95% t-intervals over
seeds (in the oracle world each seed is its own oracle and gold reward; the text world has one
teacher). AccErr's exponent is the compounding measure (1: the error along the learner's own
samples grows like L x eps, as on the expert's prefixes; 2: quadratically); R's exponent also
counts that later positions are harder to predict on the expert's own prefixes (eps_<=L grows
with L), which is not exposure bias.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from irlhf.algorithms.gkd import GKDConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import DemoSpec, PolicySpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.world_spec import OracleWorldSpec, TextWorldSpec
from irlhf.metrics.exposure import fit_power_law
from irlhf.report.figures import label, new_grid, save_figure, shared_legend, style_axes
from irlhf.studies.budgets import (
    EQUAL_ARM,
    EQUAL_LABEL,
    arm_column,
    budgets,
    dagger_matching_gkd,
    equal_budget_demos,
)
from irlhf.studies.common import ORACLE_KNOBS
from irlhf.studies.intervals import t_interval

DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()
"""The claim as measured here (the report's text for the oracle and text worlds)."""
WORLDS = ("oracle", "text")
LEARNERS = ("sft", EQUAL_ARM, "dagger", "gkd")
LEARNER_LABELS = {
    "sft": "BC (SFT)",
    EQUAL_ARM: EQUAL_LABEL,
    "dagger": "DAgger (mixture roll-outs, hard labels)",
    "gkd": "GKD (on-policy distillation)",
}
LEARNER_COLORS = {"sft": "C0", EQUAL_ARM: "C3", "dagger": "C1", "gkd": "C2"}

# world -> profile -> (seeds, horizon, demonstrations, SFT steps, DAgger rounds, MC samples)
PROFILES = {
    "oracle": {
        "quick": (3, 32, 256, 200, 2, 128),
        "default": (5, 64, 512, 400, 3, 256),
        "full": (10, 128, 1024, 800, 4, 512),
    },
    "text": {
        "quick": (2, 32, 128, 200, 2, 96),
        "default": (3, 64, 256, 300, 3, 128),
        "full": (6, 96, 512, 600, 4, 256),
    },
}
STUDENT = PolicySpec(kind="causal_lm", n_layer=2, n_embd=64)
"""Every student: a 2-layer, 64-wide GPT-2 (larger than the oracle, smaller than the teacher)."""
DEFINITIONS = {
    "learners": "one row per learner: the quantities below at L = max_L (seed means), most "
    "with *_ci_low / *_ci_high",
    "curves": "per learner and fit length L: seed means of R, acc_err, pct_ex_acc_err and "
    "gold_regret",
    "eps": "eps_<=L: mean per-step KL(expert || model) on the expert's own prefixes (nats)",
    "R": "R_<=L: summed per-step KL(expert || model) along the model's own samples (nats)",
    "acc_err": "AccErr_<=L = R_<=L / eps_<=L (ratio; L when errors do not compound)",
    "pct_ex_acc_err": "%ExAccErr_<=L = (R_<=L - L eps_<=L) / (L eps_<=L) x 100 (percent)",
    "per_step_kl": "R_<=L - R_<=L-1: the oracle KL at step L along the model's samples (nats)",
    "gold_regret": "J_L(expert) - J_L(model) in gold reward (Monte Carlo on both sides)",
    "oracle_nll": "NLL-oracle: mean -log expert(token) over the model's samples (nats/token)",
    "r_exponent": "slope of log R_<=L on log L over fit_lengths (mean curve over seeds)",
    "acc_err_exponent": "slope of log AccErr_<=L on log L over fit_lengths (the compounding "
    "measure: 1 = linear, 2 = quadratic)",
    "j_model": "Monte-Carlo gold return of the learner over the horizon (j_expert: the expert's)",
    "oracle_queries": "ExpertOracle queries (roll-out expert steps and labels; 0 for BC)",
    "demo_tokens": "demonstration tokens",
    "optimizer_steps": "optimiser steps of the student",
}


def world_spec(world: str, horizon: int, seed: int) -> OracleWorldSpec | TextWorldSpec:
    """The oracle world of this seed (its own random expert and gold reward), or the text world
    (one cached teacher; 16-token prompts from the held-out plays)."""
    if world == "oracle":
        return OracleWorldSpec(horizon=horizon, seed=seed, **ORACLE_KNOBS)
    return TextWorldSpec(horizon=horizon, prompt_length=16)


def configs(profile: str, world: str) -> list[ImitationConfig]:
    """BC, equal-budget BC, DAgger and GKD students per seed, from the same demonstrations
    (budgets in the module docstring). The text world's GKD batches are 16 sequences (32 in the
    oracle world): its teacher labels every on-policy batch, and DAgger's matching roll-outs
    grow with it."""
    seeds, horizon, n_demos, steps, rounds, mc = PROFILES[world][profile]
    batch = 16 if world == "text" else 32
    fit = SFTConfig(steps=steps, batch_size=32, lr=3e-3)
    gkd = GKDConfig(steps=2 * steps, batch_size=batch, lr=3e-3, lmbda=0.5, beta=0.0)
    fit_steps = 2 * steps // (rounds + 1)
    dagger = dagger_matching_gkd(gkd, n_demos, horizon, rounds, fit_steps=fit_steps)
    n_equal = equal_budget_demos(n_demos, gkd.expected_queries(n_demos, horizon), horizon)
    learners = {
        "sft": ("sft", n_demos, fit),
        EQUAL_ARM: ("sft", n_equal, fit.model_copy(update={"steps": gkd.steps})),
        "dagger": ("dagger", n_demos, fit),
        "gkd": ("gkd", n_demos, fit),
    }
    return [
        ImitationConfig(
            seed=seed,
            world=world_spec(world, horizon, seed),
            algorithm=algorithm,
            policy=STUDENT,
            demonstrations=DemoSpec(n=n),
            sft=sft,
            dagger=dagger,
            gkd=gkd,
            mc_samples=mc,
        )
        for algorithm, n, sft in learners.values()
        for seed in range(seeds)
    ]


def fit_lengths(horizon: int) -> np.ndarray:
    """Powers of two from 4 to the horizon (the curves' first steps are dominated by the
    prompt)."""
    return 2 ** np.arange(2, int(np.log2(horizon)) + 1)


def _ci(prefix: str, values: np.ndarray) -> dict:
    mean, low, high = t_interval(values)
    return {prefix: mean, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


def _exponent(prefix: str, lengths: np.ndarray, table: pd.DataFrame) -> dict:
    """The power-law fit as {prefix, prefix_ci_low, prefix_ci_high, prefix_note}: nan with the
    fit's reason in the note when there is no power law (a non-positive or infinite mean)."""
    note = None
    try:
        fit = fit_power_law(lengths, table[lengths].to_numpy())
        values = (fit.exponent, fit.ci_low, fit.ci_high)
        note = fit.note
    except ValueError as error:
        values = (float("nan"),) * 3
        note = f"no power law: {error}"
    keys = [prefix, f"{prefix}_ci_low", f"{prefix}_ci_high"]
    return dict(zip(keys, values, strict=True)) | {f"{prefix}_note": note}


def summarize(df: pd.DataFrame, out: Path) -> dict:
    """The summary of a neural-world compounding grid (keys in `DEFINITIONS` and below)."""
    ok = df[df["status"] == "done"].copy()
    world = str(ok["world.kind"].dropna().iloc[0])
    ok["learner"] = arm_column(ok, ["world.kind"])
    per_l = ok[ok["L"].notna()]
    scalars = ok[ok["L"].isna()].pivot_table(
        index=["learner", "seed"], columns="metric", values="value"
    )
    rows, curves, tables = [], [], {}
    for learner in [x for x in LEARNERS if x in set(ok["learner"])]:
        mine = per_l[per_l["learner"] == learner]

        def table(metric: str, mine: pd.DataFrame = mine) -> pd.DataFrame:
            return mine[mine["metric"] == metric].pivot_table(
                index="seed", columns="L", values="value"
            )

        t = {m: table(m) for m in ("R", "eps", "acc_err", "pct_ex_acc_err", "regret")}
        t["per_step_kl"] = t["R"].diff(axis=1).fillna(t["R"])
        tables[learner] = t
        max_l = int(t["R"].columns.max())
        lengths = fit_lengths(max_l)
        s = scalars.loc[learner]
        row = {
            "learner": learner,
            "label": LEARNER_LABELS[learner],
            "seeds": len(t["R"]),
            "max_L": max_l,
            "fit_lengths": [int(x) for x in lengths],
            **_exponent("r_exponent", lengths, t["R"]),
            **_exponent("acc_err_exponent", lengths, t["acc_err"]),
            **_ci("acc_err", t["acc_err"][max_l].to_numpy()),
            **_ci("pct_ex_acc_err", t["pct_ex_acc_err"][max_l].to_numpy()),
            **_ci("R", t["R"][max_l].to_numpy()),
            **_ci("eps", t["eps"][max_l].to_numpy()),
            "per_step_kl_first": float(t["per_step_kl"][1].mean()),
            "per_step_kl_last": float(t["per_step_kl"][max_l].mean()),
            **_ci("gold_regret", t["regret"][max_l].to_numpy()),
            **_ci("oracle_nll", s["oracle_nll"].to_numpy()),
            "j_model": float(s["j_model"].mean()),
            "j_expert": float(s["j_expert"].mean()),
            **budgets(s),
        }
        rows.append({k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()})
        for length in lengths:
            curves.append(
                {"learner": learner, "L": int(length)}
                | {m: float(t[m][length].mean()) for m in ("R", "acc_err", "pct_ex_acc_err")}
                | {"gold_regret": float(t["regret"][length].mean())}
            )
    _figure(tables, world, out / f"compounding_{world}.png")
    headline = []
    for r in rows:
        name = f"{world} world, {r['label']}"
        at = f"at L={r['max_L']}"
        headline += [
            _headline(f"{name}: growth exponent of AccErr_<=L", r, "acc_err_exponent"),
            _headline(f"{name}: eps_<=L {at} (nats)", r, "eps"),
            _headline(f"{name}: %ExAccErr {at}", r, "pct_ex_acc_err"),
            _headline(f"{name}: gold-reward regret {at}", r, "gold_regret"),
        ]
    return {
        "world": world,
        "learners": rows,
        "curves": curves,
        "headline": headline,
        "definitions": DEFINITIONS,
        "interval": "exponents: 95% jackknife t-interval over seeds; the rest: 95% t-interval "
        "over seeds",
    }


def _headline(name: str, row: dict, key: str) -> dict:
    return {
        "name": name,
        "value": row[key],
        "ci_low": row[f"{key}_ci_low"],
        "ci_high": row[f"{key}_ci_high"],
    }


def _figure(tables: dict[str, dict[str, pd.DataFrame]], world: str, path: Path) -> None:
    fig, axes = new_grid(
        f"Exposure bias in the {world} world: BC vs DAgger vs GKD "
        "(mean over seeds, band = seed range)",
        1,
        3,
    )
    panels = [
        ("R", "accumulated oracle KL R_<=L", label("R_<=L", "nats")),
        ("pct_ex_acc_err", "excess accumulated error", label("%ExAccErr_<=L", "percent")),
        ("regret", "gold-reward regret", label("J_L(expert) - J_L(model)", "gold reward units")),
    ]
    for ax, (metric, title, ylabel) in zip(axes, panels, strict=True):
        style_axes(ax, title, label("prefix length L", "tokens"), ylabel)
        for learner, t in tables.items():
            curve = t[metric]
            L = curve.columns.to_numpy()
            color = LEARNER_COLORS[learner]
            ax.plot(L, curve.mean(axis=0), color=color, label=LEARNER_LABELS[learner])
            if len(curve) > 1:
                ax.fill_between(L, curve.min(axis=0), curve.max(axis=0), color=color, alpha=0.15)
        ax.set_xscale("log", base=2)
    ax = axes[0]
    ax.set_yscale("log")
    sft = tables.get("sft", next(iter(tables.values())))["R"].mean(axis=0)
    ref = np.array([4.0, float(sft.index.max())])
    anchor = float(sft.loc[4]) if 4 in sft.index else float(sft.iloc[0])
    ax.plot(ref, anchor * (ref / 4) ** 2, ":", color="grey", label="slope 2 (reference)")
    ax.plot(ref, anchor * (ref / 4), "-.", color="grey", label="slope 1 (reference)")
    axes[2].axhline(0.0, color="grey", linewidth=0.8)
    shared_legend(fig, axes)
    save_figure(fig, path)
