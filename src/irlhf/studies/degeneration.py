"""Study `degeneration`: do students trained on their own generations repeat themselves less?

In the real-text world (a teacher LM trained on Shakespeare's plays, `irlhf.worlds.text`),
students smaller than the teacher are trained at equal optimiser steps by SFT on teacher
samples (behaviour cloning), by on-policy distillation (GKD, Agarwal et al. 2024: each step a
batch of the student's own samples with probability 0.5, else of teacher samples, labelled with
the teacher's distribution), by SFT at GKD's feedback budget (as many teacher-labelled tokens as
GKD's demonstrations and oracle queries together) and by RLHF from the SFT student (RLOO against
a reward model fitted to annotator comparisons on the gold reward), plus the control the design
asks for: the same student trained on the real text (a small model loops partly because it is
small). Each model's budget (demonstration tokens, oracle queries, optimiser steps) is in the
summary's `budgets`. Each
is decoded greedily and by sampling at temperature 1 from held-out prompts and scored by
repetition (rep-4, seq-rep-4, distinct-4, exact and soft loop rate; Welleck et al. 2019,
Holtzman et al. 2020), by the self-reinforcement curve of Xu et al. 2022 (a held-out line
repeated n times in the context: TP, IP, WR against n) and by the excess accumulated error
%ExAccErr of Arora et al. 2022 against the prefix length, with the teacher as the oracle.
Intervals are 95% t-intervals over seeds. Context policy: prompt + completion always fit the
context the models were trained on (no sliding window, no restart).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from irlhf.algorithms.gkd import GKDConfig
from irlhf.algorithms.reward_model import RewardModelConfig
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.degeneration import (
    METHODS,
    DegenerationConfig,
    EvalSpec,
    RLHFSpec,
    StudentSpec,
)
from irlhf.report.figures import label, new_figure, new_grid, save_figure, style_axes
from irlhf.studies.base import Study, register_study
from irlhf.studies.budgets import BUDGET_KEYS, equal_budget_demos
from irlhf.studies.budgets import budgets as arm_budgets
from irlhf.studies.intervals import t_interval, verdict
from irlhf.worlds.text import TextSpec

NAMES = {
    "teacher": "teacher",
    "sft": "SFT",
    "sft_equal": "SFT, GKD's budget",
    "gkd": "on-policy (GKD)",
    "rlhf": "RLHF (RLOO)",
    "real_text": "real text (control)",
}
MODEL_METRICS = ("rep_4", "seq_rep_4", "distinct_4", "loop_rate", "soft_loop_rate", "gold_return")


def grid(
    seeds: int,
    world: TextSpec,
    student: StudentSpec,
    n_demonstrations: int,
    sft_steps: int,
    rlhf: RLHFSpec,
    evaluation: EvalSpec,
    batch_size: int = 16,
    methods: tuple[str, ...] = METHODS,
) -> list[DegenerationConfig]:
    """One config per (method, seed); SFT, GKD, SFT at GKD's budget and the control take
    `sft_steps` optimiser steps of `batch_size` sequences. With `rlhf` in `methods` there is no
    separate `sft` run: the rlhf run of a seed evaluates its SFT start, which is that run's
    student (the same data, steps and evaluation stream), and the summary reads it as `sft`.
    GKD: lmbda 0.5, beta 0.5 (TRL's defaults), a fixed set of n_demonstrations / 4 teacher
    samples."""
    sft = SFTConfig(steps=sft_steps, batch_size=batch_size, lr=3e-3)
    gkd = GKDConfig(steps=sft_steps, batch_size=batch_size, lr=3e-3, lmbda=0.5, beta=0.5)
    gkd_demos = max(2, n_demonstrations // 4)
    queries = gkd.expected_queries(gkd_demos, world.horizon)
    return [
        DegenerationConfig(
            seed=seed,
            world=world,
            method=method,
            student=student,
            n_demonstrations=n_demonstrations,
            gkd_demonstrations=gkd_demos,
            sft_equal_demonstrations=equal_budget_demos(gkd_demos, queries, world.horizon),
            sft=sft,
            gkd=gkd,
            rlhf=rlhf,
            eval=evaluation,
        )
        for method in methods
        if not (method == "sft" and "rlhf" in methods)  # the rlhf run evaluates its SFT start
        for seed in range(1 if method == "teacher" else seeds)
    ]


def configs(profile: str) -> list[DegenerationConfig]:
    student = StudentSpec()
    if profile == "quick":
        rlhf = RLHFSpec(
            comparisons=64,
            reward_model=RewardModelConfig(kind="neural", steps=30, batch_size=16, lr=3e-4),
            rloo=RLOOConfig(iterations=5, prompts_per_iteration=8, samples_per_prompt=4, lr=3e-4),
        )
        evaluation = EvalSpec(n_prompts=16, mc_samples=16, n_sentences=6)
        return grid(1, TextSpec(horizon=64), student, 256, 60, rlhf, evaluation)
    # default: sized for the 25-minute `make reproduce` on 2 cores (16 runs)
    seeds, n_demos, steps, evaluation = {
        "default": (3, 512, 200, EvalSpec(n_prompts=32, mc_samples=32, n_sentences=8)),
        "full": (5, 2048, 600, EvalSpec()),
    }[profile]
    return grid(seeds, TextSpec(), student, n_demos, steps, RLHFSpec(), evaluation)


# ---- summary -------------------------------------------------------------------------------


FRACTIONS = {
    *("rep_4", "seq_rep_4", "distinct_4", "loop_rate", "soft_loop_rate", "tp", "ip", "wr"),
    *("rm_train_accuracy", "rm_held_out_accuracy"),
}
"""Metrics that are fractions: their intervals are clipped to [0, 1]."""


def _interval(values: np.ndarray, metric: str = "") -> tuple[float, float, float]:
    """mean and 95% t-interval over seeds; fractions clipped to [0, 1]."""
    return t_interval(values, bounds=(0.0, 1.0) if metric in FRACTIONS else None)


def _clean(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _model_rows(ok: pd.DataFrame) -> list[dict]:
    rows = []
    pct = ok[ok["metric"] == "pct_ex_acc_err"]
    max_pct = pct[pct["L"] == pct["L"].max()] if len(pct) else pct
    for method in METHODS:
        for decoding in ("greedy", "sample"):
            sub = ok[(ok["method"] == method) & (ok["decoding"] == decoding)]
            if sub.empty:
                continue
            row: dict = {"name": NAMES[method], "decoding": decoding}
            for metric in (*MODEL_METRICS, "pct_ex_acc_err_at_max_len"):
                if metric == "pct_ex_acc_err_at_max_len":
                    at_max = max_pct[(max_pct["method"] == method)]
                    values = at_max[at_max["decoding"] == decoding]["value"].to_numpy()
                else:
                    values = sub[sub["metric"] == metric]["value"].to_numpy()
                mean, lo, hi = _interval(values, metric)
                row[metric] = _clean(mean)
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = _clean(lo), _clean(hi)
            row["seeds"] = int(sub["seed"].nunique())
            rows.append(row)
    return rows


def _self_reinforcement_rows(ok: pd.DataFrame) -> list[dict]:
    sr = ok[ok["metric"].isin(["tp", "ip", "wr"])]
    rows = []
    for method in METHODS:
        for n, group in sr[sr["method"] == method].groupby("n_repeats"):
            row: dict = {"name": NAMES[method], "n_repeats": int(n)}
            for metric in ("tp", "ip", "wr"):
                values = group[group["metric"] == metric]["value"].to_numpy()
                mean, lo, hi = _interval(values, metric)
                row[metric] = _clean(mean)
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = _clean(lo), _clean(hi)
            rows.append(row)
    return rows


def summarize(df: pd.DataFrame, out: Path) -> dict:
    ok = df[df["status"] == "done"]
    if "stage" in ok:  # an rlhf run's records of its SFT start are the sft method's
        ok = ok.assign(method=ok["method"].where(ok["stage"] != "sft", "sft"))
    for column in ("decoding", "n_repeats", "L"):
        if column not in ok:
            ok = ok.assign(**{column: np.nan})
    models = _model_rows(ok)
    reinforcement = _self_reinforcement_rows(ok)
    headline = []
    for row in models:
        if row["decoding"] != "greedy":
            continue
        for metric in ("loop_rate", "seq_rep_4", "pct_ex_acc_err_at_max_len"):
            headline.append(
                {
                    "name": f"{metric} (greedy): {row['name']}",
                    "value": row[metric],
                    "ci_low": row[f"{metric}_ci_low"],
                    "ci_high": row[f"{metric}_ci_high"],
                }
            )
    rises = {}
    for method in METHODS:
        rows = [r for r in reinforcement if r["name"] == NAMES[method]]
        if len(rows) > 1 and rows[0]["tp"] is not None and rows[-1]["tp"] is not None:
            rises[NAMES[method]] = rows[-1]["tp"] - rows[0]["tp"]
    _figure_repetition(models, out / "degeneration_repetition.png")
    _figure_reinforcement(reinforcement, out / "degeneration_self_reinforcement.png")
    _figure_exposure(ok, out / "degeneration_exacc.png")
    teacher = ok[(ok["method"] == "teacher") & ok["metric"].str.startswith("teacher/")]
    rlhf = ok[ok["method"] == "rlhf"]
    reward_model = {}
    for metric in ("rm_train_accuracy", "rm_held_out_accuracy", "annotator_comparisons"):
        mean, lo, hi = _interval(rlhf[rlhf["metric"] == metric]["value"].to_numpy(), metric)
        reward_model[metric] = {"value": _clean(mean), "ci_low": _clean(lo), "ci_high": _clean(hi)}
    spent = ok[ok["metric"].isin(BUDGET_KEYS)]
    per_seed = spent.pivot_table(index=["method", "seed"], columns="metric", values="value")
    budgets = {NAMES[str(m)]: arm_budgets(g) for m, g in per_seed.groupby(level="method")}
    return {
        "claims": _claims(ok),
        "models": models,
        "budgets": budgets,
        "self_reinforcement": reinforcement,
        "headline": headline,
        "tp_rise_max_vs_1_repeat": rises,
        "teacher": {m: float(v) for m, v in teacher.groupby("metric")["value"].first().items()},
        "reward_model": reward_model,
        "interval": "95% t-interval over seeds",
        "context_policy": "prompt + completion fit the trained context; no sliding window",
    }


def _per_seed(ok: pd.DataFrame, metric: str, **where: object) -> pd.DataFrame:
    """[seed x method] values of one metric (rows matching `where`, e.g. decoding="greedy")."""
    rows = ok[ok["metric"] == metric]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows.pivot_table(index="seed", columns="method", values="value")


def _paired_claim(claim: str, what: str, values: pd.Series) -> dict:
    """A claim "the paired difference `values` (one per seed) is above 0" with its 95% t-interval
    over seeds (inconclusive with fewer than 2 seeds)."""
    mean, low, high = t_interval(values.to_numpy())
    return {
        "claim": claim,
        "verdict": verdict(low, high),
        "evidence": f"{what} = {mean:.3f} [{low:.3f}, {high:.3f}] over {values.notna().sum()} "
        "seeds (paired 95% t)",
    }


def _claims(ok: pd.DataFrame) -> list[dict]:
    """The study's question in verdicts, each a difference paired by seed: greedy decoding loops
    more than sampling (SFT); students trained on their own generations (GKD) or by RLHF loop
    less than SFT under greedy decoding, also at GKD's budget; a repeated line reinforces itself
    (Xu et al. 2022: TP after the last repeat above TP after the first, SFT)."""
    out = []
    greedy = _per_seed(ok, "loop_rate", decoding="greedy")
    sampled = _per_seed(ok, "loop_rate", decoding="sample")
    if "sft" in greedy and "sft" in sampled:
        out.append(_paired_claim(
            "SFT's greedy continuations loop more often than its sampled ones",
            "loop rate greedy - sample", greedy["sft"] - sampled["sft"],
        ))  # fmt: skip
    for other in ("gkd", "rlhf"):
        for base in ("sft", "sft_equal"):
            if other in greedy and base in greedy:
                out.append(_paired_claim(
                    f"{NAMES[other]} loops less than {NAMES[base]} (greedy)",
                    f"loop rate {base} - {other}", greedy[base] - greedy[other],
                ))  # fmt: skip
    tp = ok[(ok["metric"] == "tp") & (ok["method"] == "sft")]
    if tp["n_repeats"].nunique() > 1:
        first, last = tp["n_repeats"].min(), tp["n_repeats"].max()
        by = tp.pivot_table(index="seed", columns="n_repeats", values="value")
        out.append(_paired_claim(
            f"repetition reinforces itself in SFT: TP after {int(last)} repeats above TP after "
            f"{int(first)}",
            f"TP[{int(last)}] - TP[{int(first)}]", by[last] - by[first],
        ))  # fmt: skip
    return out


def _figure_repetition(models: list[dict], path: Path) -> None:
    fig, axes = new_grid("Repetition of each model's continuations (95% t-interval)", 1, 2)
    for ax, metric, unit in zip(
        axes, ("loop_rate", "seq_rep_4"), ("fraction of continuations", "fraction"), strict=True
    ):
        style_axes(ax, metric, label("model", "name"), label(metric, unit))
        names = list(dict.fromkeys(r["name"] for r in models))
        x = np.arange(len(names))
        for i, decoding in enumerate(("greedy", "sample")):
            rows = {r["name"]: r for r in models if r["decoding"] == decoding}
            means = np.array([_nan(rows.get(n, {}).get(metric)) for n in names])
            lo = np.array([_nan(rows.get(n, {}).get(f"{metric}_ci_low")) for n in names])
            hi = np.array([_nan(rows.get(n, {}).get(f"{metric}_ci_high")) for n in names])
            err = np.nan_to_num(np.vstack([means - lo, hi - means]), nan=0.0).clip(min=0)
            ax.bar(x + (i - 0.5) * 0.4, np.nan_to_num(means), 0.4, yerr=err, label=decoding)
        ax.set_xticks(x, names, rotation=20, fontsize=7)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _figure_reinforcement(rows: list[dict], path: Path) -> None:
    fig, axes = new_grid("Self-reinforcement of repetition (Xu et al. 2022), mean over seeds", 1, 3)
    titles = {"tp": "token probability TP", "ip": "increase rate IP", "wr": "winner rate WR"}
    for ax, metric in zip(axes, ("tp", "ip", "wr"), strict=True):
        style_axes(ax, titles[metric], label("repeats n", "copies"), label(metric, "fraction"))
        for name in dict.fromkeys(r["name"] for r in rows):
            points = [(r["n_repeats"], _nan(r[metric])) for r in rows if r["name"] == name]
            n, values = zip(*points, strict=True)
            ax.plot(n, values, marker="o", label=name)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def _figure_exposure(ok: pd.DataFrame, path: Path) -> None:
    fig, ax = new_figure(
        "%ExAccErr, teacher as oracle (Arora et al. 2022), mean over seeds",
        label("prefix length L", "tokens"),
        label("%ExAccErr", "% of L x eps"),
    )
    pct = ok[ok["metric"] == "pct_ex_acc_err"]
    for i, method in enumerate(METHODS):
        for decoding, style in (("greedy", "-"), ("sample", ":")):
            sub = pct[(pct["method"] == method) & (pct["decoding"] == decoding)]
            if sub.empty:
                continue
            mean = sub.groupby("L")["value"].mean()
            label_ = f"{NAMES[method]}, {decoding}"
            ax.plot(mean.index, mean.values, style, color=f"C{i}", label=label_)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.legend(fontsize=7)
    save_figure(fig, path)


STUDY = Study(
    name="degeneration",
    title="Degeneration: repetition of SFT vs on-policy vs RLHF students on real text",
    description=__doc__.split("\n\n", 1)[1].strip(),
    configs=configs,
    summarize=summarize,
)
register_study(STUDY)
