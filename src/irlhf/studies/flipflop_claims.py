"""The flip-flop compounding summary's own tables (`irlhf.studies.compounding_flipflop`): paired
regret gaps between neural arms, the two-state model of the neural learners, the split of the
interval into variation between worlds and variation in the data, and the claims' verdicts.

Every interval is a 95% t-interval over seeds (`irlhf.studies.intervals.t_interval`) or, for
exponents, the jackknife of `fit_power_law`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from irlhf.metrics.exposure import fit_power_law
from irlhf.metrics.traps import TrapRates
from irlhf.studies.budgets import EQUAL_ARM
from irlhf.studies.intervals import t_interval, verdict

PAIRS = (("sft", "dagger"), ("sft", "gkd"), (EQUAL_ARM, "dagger"), (EQUAL_ARM, "gkd"))
"""(worse, better) neural arms whose regret at the longest L is compared per data seed."""
TRAP_METRICS = ("entry_rate", "exit_rate", "trap_cost", "good_shortfall", "first_step_entry_rate")


def paired_gaps(curves: dict, world: str = "absorbing", learner: str = "causal_lm") -> list[dict]:
    """Per pair of `PAIRS`: regret_at_max_L(worse) - regret_at_max_L(better) per data seed (the
    same seed gives both arms the same demonstrations), its mean and t-interval."""
    rows = []
    for worse, better in PAIRS:
        a, b = curves.get((world, learner, worse)), curves.get((world, learner, better))
        if a is None or b is None:
            continue
        L = int(min(a.columns.max(), b.columns.max()))
        gap = (a[L] - b[L]).dropna()
        mean, low, high = t_interval(gap.to_numpy())
        rows.append(
            {
                "world": world,
                "learner": learner,
                "minus": worse,
                "arm": better,
                "L": L,
                "gap": mean,
                "ci_low": low,
                "ci_high": high,
                "seeds": len(gap),
            }  # fmt: skip
        )
    return rows


def neural_two_state(ok: pd.DataFrame, exponents: list[dict]) -> list[dict]:
    """Per (preset, arm) of neural learners: the seed means of the Monte-Carlo trap rates the
    imitation kind recorded (`trap_*`, `irlhf.metrics.traps.trap_rates_mc`), the exponent of the
    two-state chain they define per seed (fitted over seeds on the measured row's lengths),
    and whether it falls inside the measured exponent's interval."""
    neural = ok[(ok["policy.kind"] == "causal_lm") & ok["metric"].str.startswith("trap_")]
    if neural.empty:
        return []
    measured = {(r["world"], r["algorithm"]): r for r in exponents if r["learner"] == "causal_lm"}
    table = neural.pivot_table(
        index=["world.preset", "arm", "seed"], columns="metric", values="value"
    )
    rows = []
    for (preset, arm), group in table.groupby(level=[0, 1]):
        row = measured.get((preset, arm))
        needed = [f"trap_{k}" for k in TRAP_METRICS]
        if row is None or not set(needed) <= set(group.columns):
            continue
        group = group.dropna(subset=needed)
        lengths = np.asarray(row["fit_lengths"])
        horizon = int(lengths.max())
        curves = np.stack(
            [
                TrapRates(
                    **{k: float(s[f"trap_{k}"]) for k in TRAP_METRICS},
                    start_trap=0.0,
                    horizon=horizon,
                ).regret()[lengths - 1]  # fmt: skip
                for _, s in group.iterrows()
            ]
        )
        try:
            fit = fit_power_law(lengths, curves)
            predicted, note = fit.exponent, fit.note
        except ValueError as error:
            predicted, note = math.nan, f"no predicted power law: {error}"
        rows.append(
            {
                "world": preset,
                "algorithm": arm,
                "learner": "causal_lm",
                "seeds": len(group),
                **{k: float(group[f"trap_{k}"].mean()) for k in TRAP_METRICS},
                "predicted_exponent": predicted,
                "measured_exponent": row["exponent"],
                "measured_ci_low": row["ci_low"],
                "measured_ci_high": row["ci_high"],
                "predicts": bool(row["ci_low"] <= predicted <= row["ci_high"]),
                "note": note,
            }
        )
    return rows


def world_seed_table(by_world: pd.DataFrame, by_data: pd.DataFrame, fit_lengths) -> list[dict]:
    """Tabular BC and DAgger: the exponent and the regret at the longest L with intervals over
    data seeds in one world (`by_data`) and over world seeds with one data seed (`by_world`)."""
    rows = []
    for source, frame, seed_column in (
        ("data", by_data, "seed"),
        ("world", by_world, "world.seed"),
    ):
        regret = frame[(frame["metric"] == "regret") & (frame["policy.kind"] == "tabular")]
        for (preset, arm), group in regret.groupby(["world.preset", "arm"]):
            if arm not in ("sft", "dagger"):
                continue
            table = group.pivot_table(index=seed_column, columns="L", values="value")
            lengths = fit_lengths(int(table.columns.max()))
            try:
                fit = fit_power_law(lengths, table[lengths].to_numpy())
                exponent, lo, hi, note = fit.exponent, fit.ci_low, fit.ci_high, fit.note
            except ValueError as error:  # a mean regret <= 0 at some length: no power law
                exponent, lo, hi, note = math.nan, math.nan, math.nan, str(error)
            mean, low, high = t_interval(table[lengths[-1]].to_numpy())
            rows.append(
                {
                    "world": preset,
                    "algorithm": arm,
                    "seeds_vary": source,
                    "seeds": len(table),
                    "exponent": exponent,
                    "ci_low": lo,
                    "ci_high": hi,
                    "regret_at_max_L": mean,
                    "regret_ci_low": low,
                    "regret_ci_high": high,
                    "note": note,
                }
            )
    return rows


def claims(exponents: list[dict], gaps: list[dict], learner: str = "causal_lm") -> list[dict]:
    """Issue 14's claims for neural students, each with a verdict from the intervals: "holds"
    (the interval is on the claimed side), "does not hold" (on the other side) or
    "inconclusive" (it straddles the bound), and the numbers that decide it."""
    neural = {(r["world"], r["algorithm"]): r for r in exponents if r["learner"] == learner}
    who = "neural" if learner == "causal_lm" else learner
    out = []

    def bound(world: str, arm: str, op: str, value: float, text: str) -> None:
        row = neural.get((world, arm))
        if row is None:
            return
        lo, hi = row["ci_low"], row["ci_high"]
        above = op == ">="
        if (lo >= value) if above else (hi <= value):
            decided = "holds"
        elif (hi < value) if above else (lo > value):
            decided = "does not hold"
        else:
            decided = "inconclusive"
        out.append(
            {
                "claim": text,
                "verdict": decided,
                "evidence": f"exponent {row['exponent']:.2f} [{lo:.2f}, {hi:.2f}], "
                f"{row['seeds']} seeds",
            }  # fmt: skip
        )

    bound("absorbing", "sft", ">=", 1.6, f"{who} BC compounds where traps absorb (exponent >= 1.6)")
    for arm in ("dagger", "gkd"):
        bound("absorbing", arm, "<=", 1.3, f"{who} {arm} does not compound (exponent <= 1.3)")
    bound("recoverable", "sft", "<=", 1.3, f"{who} BC does not compound where traps release")
    for g in gaps:
        out.append(
            {
                "claim": f"{g['arm']}'s regret at L = {g['L']} is below {g['minus']}'s",
                "verdict": verdict(g["ci_low"], g["ci_high"]),
                "evidence": f"paired gap {g['gap']:.2f} [{g['ci_low']:.2f}, {g['ci_high']:.2f}], "
                f"{g['seeds']} seeds",
            }  # fmt: skip
        )
    return out
