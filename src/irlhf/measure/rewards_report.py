"""The statistics and outputs of `irlhf measure rewards` (see `irlhf.measure.rewards`).

`statistics` computes every quantity from the scores [M, n, N] (model, prompt, sample) under any
prompt weights, so the point estimate (uniform weights) and each bootstrap replicate (multinomial
resampling weights over prompts, `irlhf.measure.bootstrap`) are the same code. Outputs as
`irlhf measure exposure`: measure.json (documented keys), results.parquet, samples.parquet, PNG
figures and report.html, each written atomically and only after the measurement has run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from irlhf.experiments.provenance import software_versions, utc_now
from irlhf.experiments.storage import atomic_write_json, atomic_write_text
from irlhf.measure.bootstrap import bootstrap_weights, with_intervals
from irlhf.measure.exposure_report import _interval, _jsonable, _page, _parquet
from irlhf.report.figures import label, new_figure, save_figure
from irlhf.report.html import StudySection

QUANTILES = {"q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95}
PER_MODEL = ("mean", "std", *QUANTILES)
PER_PAIR = ("win_rate", "mean_difference")

QUANTITIES = {
    "mean": "mean over prompts of the per-prompt mean score (reward-model units)",
    "std": "standard deviation of all scores, each prompt weighing equally (reward-model units)",
    **{
        name: f"the {q:.0%} quantile of all scores, each prompt weighing equally (inverted CDF)"
        for name, q in QUANTILES.items()
    },
    "win_rate": "W(model, versus): the chance that model's continuation of a prompt scores above "
    "versus's, ties counted half (mean over prompts of the mean over sample pairs)",
    "mean_difference": "mean(model) - mean(versus) (reward-model units)",
}

KEYS = {
    "keys": "this dictionary: what each key of measure.json means",
    "command": "'rewards'",
    "finding": "the result in one paragraph: mean scores and win rates with their intervals",
    "claims": "rows {claim, verdict, evidence}, one per pair of models a < b: 'model b scores "
    "above model a' holds when the 95% interval of W(b, a) lies above 1/2, does not hold when it "
    "lies at or below 1/2, else inconclusive",
    "headline": "rows {name, value, ci_low, ci_high}: each model's mean score and its win rate "
    "against model [0]",
    "per_model": "rows {model, quantity, value, ci_low, ci_high}: mean, std and quantiles",
    "win_rates": "rows {model, versus, win_rate, ci_low, ci_high, mean_difference, "
    "difference_ci_low, difference_ci_high} for every ordered pair of models",
    "quantities": "quantity name -> its definition (the rows of results.parquet)",
    "notes": "what to know when reading the numbers (e.g. truncated texts)",
    "inputs": "the command's resolved arguments; reward_reads: 'token ids' (the models' own) or "
    "'re-tokenized text' (the reward model's own tokenizer)",
    "files": "the other files written",
    "versions": "software versions",
    "date": "when it was written (UTC)",
}

Table = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
"""quantity -> (value, ci_low, ci_high): [M] per model, [M, M] per ordered pair (model, versus)."""


def weighted_quantiles(weights: np.ndarray, scores: np.ndarray, q: float) -> np.ndarray:
    """[k] the q-quantile (inverted CDF: the smallest score whose cumulative weight reaches q)
    of scores [n, N] under prompt weights [k, n] (each sample of prompt i weighs w_i / N)."""
    n, N = scores.shape
    flat = scores.reshape(-1)  # prompt-major: entry i * N + j is prompt i, sample j
    order = np.argsort(flat, kind="stable")
    cumulative = np.cumsum(weights[:, order // N] / N, axis=1)  # (k, n N)
    index = (cumulative >= q - 1e-9).argmax(axis=1)  # 1e-9: round-off in the sums
    return flat[order][index]


def win_fractions(scores: np.ndarray) -> np.ndarray:
    """[M, M, n]: per prompt, the fraction of sample pairs (j, k) where model a's j-th score is
    above model b's k-th, ties counted half."""
    a = scores[:, None, :, :, None]  # (M, 1, n, N, 1)
    b = scores[None, :, :, None, :]  # (1, M, n, 1, N)
    return ((a > b) + 0.5 * (a == b)).mean(axis=(3, 4))


def statistics(weights: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Every quantity under prompt weights [k, n] (rows summing to 1): [k, M] per model and
    [k, M, M] per ordered pair, from scores [M, n, N]."""
    per_prompt = scores.mean(axis=2)  # (M, n)
    mean = weights @ per_prompt.T  # (k, M)
    second = weights @ (scores**2).mean(axis=2).T
    out = {"mean": mean, "std": np.sqrt(np.clip(second - mean**2, 0.0, None))}
    for name, q in QUANTILES.items():
        out[name] = np.stack([weighted_quantiles(weights, s, q) for s in scores], axis=1)
    # centred at 1/2, so that a model against itself is exactly 1/2 in every replicate (its
    # weights sum to 1 only up to round-off)
    out["win_rate"] = 0.5 + np.einsum("kn,abn->kab", weights, win_fractions(scores) - 0.5)
    out["mean_difference"] = mean[:, :, None] - mean[:, None, :]
    return out


def summarise(scores: np.ndarray, seed: int, n_boot: int) -> Table:
    """quantity -> (value, ci_low, ci_high) with 95% percentile-bootstrap intervals over
    prompts."""
    M, n, _ = scores.shape
    point = statistics(np.full((1, n), 1.0 / n), scores)
    boot = statistics(bootstrap_weights(n, n_boot, seed), scores)
    flat = with_intervals(
        {k: v.reshape(1, -1) for k, v in point.items()},
        {k: v.reshape(len(v), -1) for k, v in boot.items()},
    )
    shape = {name: (M, M) if name in PER_PAIR else (M,) for name in flat}
    return {name: tuple(a.reshape(shape[name]) for a in arrays) for name, arrays in flat.items()}  # type: ignore[misc]


def _at(table: Table, name: str, *index: int) -> tuple[float, float, float]:
    value, low, high = table[name]
    return float(value[index]), float(low[index]), float(high[index])


def pair_verdict(win: tuple[float, float, float]) -> str:
    """'model b scores above model a' from W(b, a)'s interval, as exposure's claims: above 1/2
    holds, at or below 1/2 does not hold (W = 1/2 exactly for a model against itself)."""
    return "holds" if win[1] > 0.5 else "does not hold" if win[2] <= 0.5 else "inconclusive"


def claims_and_finding(
    table: Table, names: tuple[str, ...], inputs: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """A verdict row per pair a < b ("b scores above a") and the one-paragraph finding."""
    rows = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            win = _at(table, "win_rate", b, a)
            rows.append({
                "claim": f"{names[b]} scores above {names[a]} under the reward model: its "
                "continuation of a prompt wins more than half the comparisons (W > 1/2)",
                "verdict": pair_verdict(win),
                "evidence": f"W = {_interval(win)}; mean score {_interval(_at(table, 'mean', b))}"
                f" vs {_interval(_at(table, 'mean', a))}, difference "
                f"{_interval(_at(table, 'mean_difference', b, a))}",
            })  # fmt: skip
    means = "; ".join(f"{name} {_interval(_at(table, 'mean', m))}" for m, name in enumerate(names))
    text = (
        f"Reward model {inputs['reward']} on {inputs['n_prompts']} prompts, "
        f"{inputs['samples']} continuation(s) of {inputs['max_new_tokens']} tokens per prompt "
        f"and model ({inputs['decoding']}): mean score {means}."
    )
    for b in range(1, len(names)):
        for a in dict.fromkeys((0, b - 1)):  # against the first model, and the one before
            win = _at(table, "win_rate", b, a)
            text += (
                f" {names[b]} beats {names[a]} in W = {_interval(win)} of comparisons "
                f"({pair_verdict(win)})."
            )
    return rows, text


def result_rows(table: Table, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per model x quantity (versus '' and -1) and per ordered pair x quantity."""
    rows = []
    for m, name in enumerate(names):
        for quantity in PER_MODEL:
            value, low, high = _at(table, quantity, m)
            rows.append({"quantity": quantity, "model": name, "model_index": m, "versus": "",
                         "versus_index": -1, "value": value, "ci_low": low,
                         "ci_high": high})  # fmt: skip
        for v, versus in enumerate(names):
            for quantity in PER_PAIR:
                if v != m:
                    value, low, high = _at(table, quantity, m, v)
                    rows.append({"quantity": quantity, "model": name, "model_index": m,
                                 "versus": versus, "versus_index": v, "value": value,
                                 "ci_low": low, "ci_high": high})  # fmt: skip
    return rows


# ---- figures ----------------------------------------------------------------------------------


def gaussian_kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """The Gaussian kernel density of `values` on `grid` with Scott's bandwidth (sd n^-1/5);
    None when the values do not vary (no density to draw)."""
    sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    if not sd > 0:
        return None
    h = sd * len(values) ** (-1 / 5)
    z = (grid[:, None] - values[None, :]) / h
    return np.exp(-0.5 * z**2).sum(axis=1) / (len(values) * h * math.sqrt(2 * math.pi))


def figures(table: Table, scores: np.ndarray, names: tuple[str, ...], out: Path) -> list[Path]:
    """rewards_distribution.png (Figure 20's overlaid histograms and KDEs) and rewards_means.png."""
    units = "reward-model units"
    everything = scores.reshape(-1)
    edges = np.histogram_bin_edges(everything, bins=min(40, max(10, int(everything.size**0.5))))
    span = max(float(edges[-1] - edges[0]), 1e-9)
    grid = np.linspace(edges[0] - 0.1 * span, edges[-1] + 0.1 * span, 400)
    fig, ax = new_figure(
        "Reward-model scores per model (cf. Llama 2, Fig. 20)",
        label("score r(prompt, continuation)", units), label("density", f"1 / {units}"),
    )  # fmt: skip
    for m, name in enumerate(names):
        values = scores[m].reshape(-1)
        colour = f"C{m % 10}"
        ax.hist(values, bins=edges.tolist(), density=True, alpha=0.25, color=colour, label=name)
        density = gaussian_kde(values, grid)
        if density is not None:
            ax.plot(grid, density, color=colour, label=f"{name} (KDE)")
    ax.legend(fontsize=7)
    paths = [save_figure(fig, out / "rewards_distribution.png")]

    fig, ax = new_figure(
        "Mean score per model (95% bootstrap interval over prompts)",
        label("model", "position in --models"), label("mean score", units),
    )  # fmt: skip
    value, low, high = table["mean"]
    x = np.arange(len(names))
    ax.errorbar(x, value, yerr=np.stack([value - low, high - value]), fmt="o", capsize=4)
    ax.set_xticks(x, names, rotation=20, fontsize=7)
    ax.set_xlim(-0.5, len(names) - 0.5)
    paths.append(save_figure(fig, out / "rewards_means.png"))
    return paths


# ---- files ------------------------------------------------------------------------------------


def write_outputs(
    out: Path,
    table: Table,
    scores: np.ndarray,
    names: tuple[str, ...],
    inputs: dict[str, Any],
    samples: list[dict[str, Any]],
    notes: list[str],
) -> dict[str, Any]:
    """Write every file into `out` and return the contents of measure.json."""
    out = Path(out)
    claims, finding = claims_and_finding(table, names, inputs)
    rows = result_rows(table, names)
    per_model = [{k: r[k] for k in ("model", "quantity", "value", "ci_low", "ci_high")}
                 for r in rows if r["versus_index"] < 0]  # fmt: skip
    win_rates = []
    for m, name in enumerate(names):
        for v, versus in enumerate(names):
            if v != m:
                win, diff = _at(table, "win_rate", m, v), _at(table, "mean_difference", m, v)
                win_rates.append({"model": name, "versus": versus, "win_rate": win[0],
                                  "ci_low": win[1], "ci_high": win[2], "mean_difference": diff[0],
                                  "difference_ci_low": diff[1],
                                  "difference_ci_high": diff[2]})  # fmt: skip
    headline = []
    for m, name in enumerate(names):
        value, low, high = _at(table, "mean", m)
        headline.append({"name": f"mean score {name}", "value": value, "ci_low": low,
                         "ci_high": high})  # fmt: skip
    for m in range(1, len(names)):
        value, low, high = _at(table, "win_rate", m, 0)
        headline.append({"name": f"W({names[m]}, {names[0]})", "value": value, "ci_low": low,
                         "ci_high": high})  # fmt: skip
    summary = {
        "command": "rewards",
        "finding": finding,
        "claims": claims,
        "headline": headline,
        "per_model": per_model,
        "win_rates": win_rates,
        "quantities": QUANTITIES,
        "notes": notes,
        "inputs": inputs,
        "versions": software_versions(),
        "date": utc_now(),
    }
    _parquet(out / "results.parquet", rows)
    _parquet(out / "samples.parquet", samples)
    pngs = figures(table, scores, names, out)
    summary["files"] = ["results.parquet", "samples.parquet", "report.html"] + [
        p.name for p in pngs
    ]
    wide = [
        {"model": name, **{q: _at(table, q, m)[0] for q in PER_MODEL}}
        for m, name in enumerate(names)
    ]
    section = StudySection(
        directory=out, name="measure-rewards",
        title="Reward-model scores of each model (the Llama 2 Figure 20 analogue)",
        description=finding, record={"date": summary["date"]},
        summary={"claims": claims, "headline": headline, "scores per model": wide,
                 "win rates (every ordered pair)": win_rates},
        figures=pngs,
    )  # fmt: skip
    heading = "Reward-model scores of each model's continuations"
    atomic_write_text(out / "report.html", _page(section, inputs, notes, "rewards", heading))
    document = {"keys": KEYS, **_jsonable(summary)}
    atomic_write_json(out / "measure.json", document, sort_keys=False)
    return document
