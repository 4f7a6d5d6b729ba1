"""What `irlhf measure repetition` writes: measure.json (documented keys), results.parquet (the
self-reinforcement quantities by n and the degeneration metrics by decoding), samples.parquet
(every continuation), PNG figures and report.html (the finding and its verdicts first).

Every file is written atomically, and only after the measurement has run: bad input never
leaves a partial directory. The page, tables and JSON conventions are exposure's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irlhf.experiments.provenance import software_versions, utc_now
from irlhf.experiments.storage import atomic_write_json, atomic_write_text
from irlhf.measure.exposure_report import _band, _jsonable, _page, _parquet
from irlhf.measure.exposure_report import _interval as _defined_interval
from irlhf.measure.recovery_report import verdict
from irlhf.report.figures import label, new_figure, save_figure
from irlhf.report.html import StudySection

Curves = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]

DECODINGS = ("greedy", "sample")


@dataclass(frozen=True)
class Measured:
    """Curves over n = 1..N (self-reinforcement) and [1]-long values per decoding:metric, each
    name -> (value, ci_low, ci_high), plus the continuations and the metric names in order."""

    reinforcement: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    degeneration: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    samples: list[dict[str, Any]]
    metrics: tuple[str, ...]


QUANTITIES = {
    "tp": "TP at n repeats: the model's mean probability of the tokens of the n-th copy of a "
    "sentence, averaged over sentences (probability)",
    "ip": "IP at n repeats: the fraction of the n-th copy's tokens more probable than in the "
    "first copy (fraction; 0 at n = 1)",
    "wr": "WR at n repeats: the fraction of the n-th copy's tokens that rose and are the model's "
    "top-1 choice (fraction; 0 at n = 1)",
    "tp_rise": "TP[n] - TP[1] (probability)",
    "loop_rate": "fraction of continuations ending in >= 3 exact copies of a period <= 32",
    "soft_loop_rate": "fraction of continuations whose last 64 tokens have seq-rep-4 > 0.5",
    "seq_rep_2": "mean over continuations (>= 2 tokens) of 1 - unique / total 2-grams",
    "seq_rep_4": "mean over continuations (>= 4 tokens) of 1 - unique / total 4-grams",
    "rep_1": "fraction of tokens that occurred in the previous 64 tokens (pooled)",
    "distinct_1": "unique / total 1-grams over all continuations together",
    "distinct_2": "unique / total 2-grams over all continuations together",
    "distinct_4": "unique / total 4-grams over all continuations together",
}

KEYS = {
    "keys": "this dictionary: what each key of measure.json means",
    "command": "'repetition'",
    "finding": "the result in one paragraph: TP at n = 1 and n = N, IP and WR at N, and the "
    "degeneration of the greedy and sampled continuations",
    "claims": "rows {claim, verdict, evidence}: verdict 'holds' when the 95% interval of the "
    "deciding quantity lies above its bound, 'does not hold' when at or below, else "
    "'inconclusive'",
    "headline": "rows {name, value, ci_low, ci_high}: the main quantities",
    "degeneration": "rows {decoding, quantity, value, ci_low, ci_high}: every degeneration "
    "metric of the greedy and sampled continuations and their paired difference",
    "quantities": "quantity name -> its definition (the rows of results.parquet: section "
    "'self_reinforcement' by n_repeats = n, decoding 'teacher-forced'; section "
    "'degeneration' by decoding, n_repeats = 0)",
    "sentences": "the sentences repeated (texts) and where they came from (inputs.sentences)",
    "notes": "what is undefined (left out), where and why",
    "inputs": "the command's resolved arguments and the numbers of prompts and sentences",
    "files": "the other files written",
    "versions": "software versions",
    "date": "when it was written (UTC)",
}


def _at(curves: Curves, name: str, index: int = 0) -> tuple[float, float, float]:
    value, low, high = curves[name]
    return float(value[index]), float(low[index]), float(high[index])


def _interval(at: tuple[float, float, float]) -> str:
    """value [95% CI low, high], or "undefined" (never nan in the text)."""
    if math.isnan(at[0]):
        return "undefined"
    return _defined_interval((at[0], _end(at[1], -math.inf), _end(at[2], math.inf)))


def _end(x: float, fallback: float) -> float:
    return fallback if math.isnan(x) else x


def result_rows(m: Measured) -> list[dict[str, Any]]:
    """One row per defined value (a missing interval end is +-inf)."""
    rows = []

    def add(section: str, decoding: str, n: int, quantity: str, at: tuple[float, ...]) -> None:
        if not math.isnan(at[0]):
            rows.append({"section": section, "decoding": decoding, "n_repeats": n,
                         "quantity": quantity, "value": at[0], "ci_low": _end(at[1], -math.inf),
                         "ci_high": _end(at[2], math.inf)})  # fmt: skip

    for quantity, curve in m.reinforcement.items():
        for j in range(len(curve[0])):
            add(
                "self_reinforcement",
                "teacher-forced",
                j + 1,
                quantity,
                _at(m.reinforcement, quantity, j),
            )
    for name in m.degeneration:
        decoding, quantity = name.split(":")
        add("degeneration", decoding, 0, quantity, _at(m.degeneration, name))
    return rows


def notes(m: Measured, inputs: dict[str, Any]) -> list[str]:
    out = []
    if inputs["sentences"].startswith("the prompts"):
        cut = inputs["sentences"].partition("; ")[2]  # the prompts cut to fit, if any
        out.append("no --sentences: the sentences repeated are the prompts themselves"
                   + (f" ({cut})" if cut else ""))  # fmt: skip
    for name, (value, _, _) in m.degeneration.items():
        if np.isnan(value[0]):
            out.append(f"{name} is left out: no continuation is long enough to measure it")
    return out


def _decide(at: tuple[float, float, float], bound: float = 0.0) -> str:
    if math.isnan(at[0]):
        return "inconclusive"
    return verdict(at[1] - bound, at[2] - bound)


def claims_and_finding(m: Measured, N: int) -> tuple[list[dict[str, Any]], str]:
    sr, dg = m.reinforcement, m.degeneration
    tp1, tpN, rise = _at(sr, "tp", 0), _at(sr, "tp", N - 1), _at(sr, "tp_rise", N - 1)
    ipN, wrN = _at(sr, "ip", N - 1), _at(sr, "wr", N - 1)
    diff, loops = _at(dg, "greedy - sample:seq_rep_4"), _at(dg, "greedy:loop_rate")
    rows = [
        {
            "claim": f"Repetition self-reinforces: the probability of the sentence's tokens "
            f"rises with the number of repeats (TP at n = {N} above TP at n = 1)",
            "verdict": _decide(rise),
            "evidence": f"TP[{N}] - TP[1] = {_interval(rise)}; TP[1] = {_interval(tp1)}, "
            f"TP[{N}] = {_interval(tpN)}",
        },
        {
            "claim": f"Most of the sentence's tokens become more probable after {N} repeats "
            f"(IP at n = {N} above 0.5)",
            "verdict": _decide(ipN, 0.5),
            "evidence": f"IP[{N}] = {_interval(ipN)}; WR[{N}] = {_interval(wrN)}",
        },
        {
            "claim": "Greedy continuations repeat more than sampled ones (seq-rep-4 of greedy "
            "minus sampled above 0)",
            "verdict": _decide(diff),
            "evidence": f"seq-rep-4 greedy - sample = {_interval(diff)} (greedy "
            f"{_interval(_at(dg, 'greedy:seq_rep_4'))}, sample "
            f"{_interval(_at(dg, 'sample:seq_rep_4'))})",
        },
        {
            "claim": "Some greedy continuations end in a loop (greedy loop rate above 0)",
            "verdict": _decide(loops),
            "evidence": f"greedy loop rate = {_interval(loops)}, sampled "
            f"{_interval(_at(dg, 'sample:loop_rate'))}",
        },
    ]
    parts = []
    for d in DECODINGS:
        parts.append(
            f"{d}: loop rate {_interval(_at(dg, f'{d}:loop_rate'))}, seq-rep-4 "
            f"{_interval(_at(dg, f'{d}:seq_rep_4'))}, distinct-4 "
            f"{_interval(_at(dg, f'{d}:distinct_4'))}"
        )
    finding = (
        f"repetition: after {N} repeats of a sentence the model gives its tokens mean "
        f"probability TP = {_interval(tpN)}, against {_interval(tp1)} in the first copy (IP = "
        f"{_interval(ipN)}, WR = {_interval(wrN)}); its continuations, {'; '.join(parts)}. "
        f"Verdicts: self-reinforces: {rows[0]['verdict']}; greedy repeats more than sampling: "
        f"{rows[2]['verdict']}; greedy loops: {rows[3]['verdict']}."
    )
    return rows, finding


def headline(m: Measured, N: int) -> list[dict[str, Any]]:
    picks = [(m.reinforcement, q, i, f"{q} (n = {i + 1})")
             for q, i in (("tp", 0), ("tp", N - 1), ("ip", N - 1), ("wr", N - 1))]  # fmt: skip
    picks += [(m.degeneration, f"{d}:{q}", 0, f"{q} ({d})") for q in
              ("loop_rate", "seq_rep_4", "distinct_4") for d in DECODINGS]  # fmt: skip
    rows = []
    for curves, name, i, shown in picks:
        value, low, high = _at(curves, name, i)
        if not math.isnan(value):
            rows.append({"name": shown, "value": value, "ci_low": low, "ci_high": high})
    return rows


def figures(m: Measured, out: Path) -> list[Path]:
    """repetition_self_reinforcement.png, repetition_degeneration.png."""
    x = label("repeats n of the sentence in the context", "copies")
    fig, ax = new_figure("Self-reinforcement (Xu et al. 2022)", x, label("TP, IP, WR", "fraction"))
    for q, text in (
        ("tp", "TP (mean probability)"),
        ("ip", "IP (rose)"),
        ("wr", "WR (rose, top-1)"),
    ):
        _band(ax, m.reinforcement, q, text)
    ax.legend(fontsize=7)
    paths = [save_figure(fig, out / "repetition_self_reinforcement.png")]
    fig, ax = new_figure("Degeneration of the continuations", label("metric", "name"),
                         label("value", "fraction"), size=(8.0, 4.2))  # fmt: skip
    positions = np.arange(len(m.metrics))
    for j, d in enumerate(DECODINGS):
        at = np.array([_at(m.degeneration, f"{d}:{q}") for q in m.metrics])  # (metrics, 3)
        ok = ~np.isnan(at[:, 0])
        err = np.abs(np.stack([at[ok, 0] - at[ok, 1], at[ok, 2] - at[ok, 0]]))
        ax.bar(positions[ok] + (j - 0.5) * 0.4, at[ok, 0], 0.4, yerr=err, label=d, capsize=2)
    ax.set_xticks(positions, [q.replace("_", "-") for q in m.metrics], rotation=30, fontsize=7)
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "repetition_degeneration.png"))
    return paths


def write_outputs(
    out: Path, m: Measured, inputs: dict[str, Any], sentences: Sequence[str]
) -> dict[str, Any]:
    """Write every file into `out` and return the contents of measure.json."""
    N = int(inputs["max_repeats"])
    claims, finding = claims_and_finding(m, N)
    rows = result_rows(m)
    notes_ = notes(m, inputs)
    table = [{k: r[k] for k in ("decoding", "quantity", "value", "ci_low", "ci_high")}
             for r in rows if r["section"] == "degeneration"]  # fmt: skip
    document: dict[str, Any] = {
        "command": "repetition",
        "finding": finding,
        "claims": claims,
        "headline": headline(m, N),
        "degeneration": table,
        "quantities": QUANTITIES,
        "sentences": list(sentences),
        "notes": notes_,
        "inputs": inputs,
        "versions": software_versions(),
        "date": utc_now(),
    }
    _parquet(out / "results.parquet", rows)
    _parquet(out / "samples.parquet", m.samples)
    pngs = figures(m, out)
    document["files"] = ["results.parquet", "samples.parquet", "report.html"]
    document["files"] += [p.name for p in pngs]
    by_n = [r for r in rows if r["section"] == "self_reinforcement"]
    section = StudySection(
        directory=out, name="measure-repetition",
        title="Repetition: self-reinforcement (Xu et al. 2022) and degeneration",
        description=finding, record={"date": document["date"]},
        summary={"claims": claims, "headline": document["headline"],
                 "degeneration metrics": table, "self-reinforcement by n": by_n},
        figures=pngs,
    )  # fmt: skip
    heading = "Repetition in a model's continuations"
    atomic_write_text(out / "report.html", _page(section, inputs, notes_, "repetition", heading))
    result = {"keys": KEYS, **_jsonable(document)}
    atomic_write_json(out / "measure.json", result, sort_keys=False)
    return result
