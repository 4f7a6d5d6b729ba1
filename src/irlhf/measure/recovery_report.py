"""What `irlhf measure recovery` writes: measure.json (documented keys), results.parquet (one row
per distance d x quantity), samples.parquet (every prefix, perturbation and continuation), PNG
figures and report.html (the finding and its verdicts first, then the numbers).

Every file is written atomically, and only after the measurement has run: bad input never
leaves a partial directory. The page, tables and JSON conventions are exposure's
(`irlhf.measure.exposure_report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irlhf.experiments.provenance import software_versions, utc_now
from irlhf.experiments.storage import atomic_write_json, atomic_write_text
from irlhf.measure.exposure_report import _band, _interval, _jsonable, _page, _parquet
from irlhf.metrics.recovery import HalfLife
from irlhf.report.figures import label, new_figure, save_figure
from irlhf.report.html import StudySection

Curves = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Summary:
    """The curves with intervals (name -> (value, ci_low, ci_high), each [D]) and the
    half-lives of excess_kl, trace_model and trace_expert (None: undefined, see `notes`)."""

    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    half_lives: dict[str, HalfLife | None]
    notes: list[str]


QUANTITIES = {
    "excess_kl": "E[KL_d | perturbed prefix] - E[KL_d | clean prefix], KL_d = KL(expert || model) "
    "at the d-th token the model emits after the prefix (nats); left out where both are +inf",
    "excess_kl_relative": "excess_kl[d] / excess_kl[1] (ratio); left out unless excess_kl[1] is "
    "finite and > 0",
    "kl_perturbed": "E[KL_d] along the model's continuation of the perturbed prefix (nats)",
    "kl_clean": "E[KL_d] along the model's continuation of the clean prefix (nats)",
    "trace_model": "KL(model(. | clean, y_<d) || model(. | perturbed, y_<d)) along the model's "
    "continuation y of the perturbed prefix: the perturbation's trace in the model (nats)",
    "trace_expert": "the same for the expert continuing the perturbed prefix itself: the "
    "reference, how long the expert keeps the perturbation (nats)",
}
for _name in ("excess_kl", "trace_model", "trace_expert"):
    QUANTITIES[f"{_name}_below_half"] = (
        f"{_name}[1] / 2 - {_name}[d] (nats): > 0 once {_name} has fallen below half its d = 1 "
        "value"
    )

KEYS = {
    "keys": "this dictionary: what each key of measure.json means",
    "command": "'recovery'",
    "finding": "the result in one paragraph: the excess KL at d = 1 and d = D, its half-life and "
    "the traces' half-lives",
    "claims": "rows {claim, verdict, evidence}: verdict 'holds' when the 95% interval of the "
    "deciding quantity lies above 0, 'does not hold' when it lies at or below 0, else "
    "'inconclusive'",
    "headline": "rows {name, value, ci_low, ci_high}: the main quantities at d = 1 and d = D and "
    "the half-lives",
    "half_lives": "rows {curve, value, ci_low, ci_high, undefined_resamples}: first d with "
    "curve[d] < curve[1] / 2 (tokens; 'inf' if none within D), for every curve that has one",
    "quantities": "quantity name -> its definition (the rows of results.parquet, by d = 1..D)",
    "notes": "what is infinite or undefined (left out), where and why",
    "inputs": "the command's resolved arguments and the number of prompts",
    "files": "the other files written",
    "versions": "software versions",
    "date": "when it was written (UTC)",
    "values": "floats; +-inf is written as the string 'inf' / '-inf'",
}


def result_rows(curves: Curves) -> list[dict[str, Any]]:
    """One row per d x quantity with a defined value (a missing interval end is +-inf)."""
    rows = []
    for quantity, (value, low, high) in curves.items():
        for j in np.flatnonzero(~np.isnan(value)):
            lo = -math.inf if np.isnan(low[j]) else float(low[j])
            hi = math.inf if np.isnan(high[j]) else float(high[j])
            rows.append({"d": int(j + 1), "quantity": quantity, "value": float(value[j]),
                         "ci_low": lo, "ci_high": hi})  # fmt: skip
    return rows


def verdict(low: float, high: float) -> str:
    """A claim "the quantity is above 0" from its interval (exposure's rule)."""
    return "holds" if low > 0 else "does not hold" if high <= 0 else "inconclusive"


def _at(curves: Curves, name: str, d: int) -> tuple[float, float, float]:
    value, low, high = curves[name]
    return float(value[d - 1]), float(low[d - 1]), float(high[d - 1])


def _half(h: HalfLife | None) -> str:
    if h is None:
        return "undefined"
    return _interval((h.value, h.ci_low, h.ci_high)) + " tokens"


def _decide(curves: Curves, name: str, d: int) -> tuple[str, tuple[float, float, float]]:
    at = _at(curves, name, d)
    return ("inconclusive" if math.isnan(at[0]) else verdict(at[1], at[2])), at


def claims_and_finding(summary: Summary, D: int) -> tuple[list[dict[str, Any]], str]:
    """Four verdict rows (module KEYS) and the one-paragraph finding."""
    c, lives = summary.curves, summary.half_lives
    raised, first = _decide(c, "excess_kl", 1)
    halved, below = _decide(c, "excess_kl_below_half", D)
    lasting, last = _decide(c, "excess_kl", D)
    forgets, expert_below = _decide(c, "trace_expert_below_half", D)
    if raised != "holds":
        halved = "inconclusive"
        halved_evidence = (
            f"nothing to recover from: excess KL at d = 1 is {_interval(first)}, not above 0"
        )
    else:
        halved_evidence = (
            f"excess KL at d = 1 is {_interval(first)}, at d = {D} {_interval(last)}; "
            f"excess[1] / 2 - excess[{D}] = {_interval(below)} nats; half-life "
            f"{_half(lives['excess_kl'])}"
        )
    perturbed, clean = _at(c, "kl_perturbed", 1), _at(c, "kl_clean", 1)
    trace_1, trace_D = _at(c, "trace_expert", 1), _at(c, "trace_expert", D)
    rows = [
        {
            "claim": "The perturbation raises the model's per-step KL from the expert at d = 1 "
            "(excess KL at d = 1 > 0)",
            "verdict": raised,
            "evidence": f"excess KL at d = 1 = {_interval(first)} nats (perturbed "
            f"{_interval(perturbed)}, clean {_interval(clean)})",
        },
        {
            "claim": f"The model recovers within D = {D} tokens: its excess KL at d = D falls "
            "below half its value at d = 1",
            "verdict": halved,
            "evidence": halved_evidence,
        },
        {
            "claim": f"The model still carries the perturbation at d = D = {D} (excess KL at "
            "d = D > 0)",
            "verdict": lasting,
            "evidence": f"excess KL at d = {D} = {_interval(last)} nats",
        },
        {
            "claim": f"The expert itself forgets the perturbation within D = {D} tokens "
            "(reference): its trace at d = D is below half its value at d = 1",
            "verdict": forgets,
            "evidence": f"expert's trace at d = 1 {_interval(trace_1)}, at d = {D} "
            f"{_interval(trace_D)}; trace[1] / 2 - trace[{D}] = {_interval(expert_below)} "
            f"nats; half-life {_half(lives['trace_expert'])}",
        },
    ]
    finding = (
        f"self-recovery: the perturbation raises the model's per-step KL(expert || model) by "
        f"{_interval(first)} nats at d = 1 and by {_interval(last)} at d = {D}; the half-life of "
        f"this excess is {_half(lives['excess_kl'])}. The perturbation's trace in the model "
        f"has half-life {_half(lives['trace_model'])}, in the expert (the reference) "
        f"{_half(lives['trace_expert'])}. Verdicts: raised at d = 1: {raised}; recovered "
        f"within D: {halved}; still raised at d = D: {lasting}."
    )
    return rows, finding


def headline(summary: Summary, D: int) -> list[dict[str, Any]]:
    rows = []
    for name, d in (("excess_kl", 1), ("excess_kl", D), ("excess_kl_relative", D),
                    ("kl_clean", 1), ("trace_model", 1), ("trace_expert", 1)):  # fmt: skip
        value, low, high = _at(summary.curves, name, d)
        if not math.isnan(value):
            rows.append({"name": f"{name} (d = {d})", "value": value, "ci_low": low,
                         "ci_high": high})  # fmt: skip
    for name, h in summary.half_lives.items():
        if h is not None:
            rows.append({"name": f"half-life of {name} (tokens)", "value": h.value,
                         "ci_low": h.ci_low, "ci_high": h.ci_high})  # fmt: skip
    return rows


def figures(curves: Curves, out: Path) -> list[Path]:
    """recovery_excess_kl.png, recovery_arms.png, recovery_traces.png."""
    D = len(curves["excess_kl"][0])
    x = label("distance d after the perturbation", "tokens")
    paths = []
    fig, ax = new_figure("Self-recovery (He et al. 2021)", x, label("excess KL", "nats"))
    ax.axhline(0.0, color="k", linestyle=":", label="no excess")
    _band(ax, curves, "excess_kl", "excess KL(expert || model)")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "recovery_excess_kl.png"))
    fig, ax = new_figure("Per-step KL after each prefix", x, label("KL(expert || model)", "nats"))
    _band(ax, curves, "kl_perturbed", "perturbed prefix")
    _band(ax, curves, "kl_clean", "clean prefix")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "recovery_arms.png"))
    fig, ax = new_figure("The perturbation's trace", x, label("KL(clean || perturbed)", "nats"))
    _band(ax, curves, "trace_model", "model")
    _band(ax, curves, "trace_expert", "expert (reference)")
    ax.legend(fontsize=7)
    ax.set_xlim(0.5, D + 0.5)
    paths.append(save_figure(fig, out / "recovery_traces.png"))
    return paths


def write_outputs(
    out: Path, summary: Summary, inputs: dict[str, Any], samples: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write every file into `out` and return the contents of measure.json."""
    D = int(inputs["distance"])
    claims, finding = claims_and_finding(summary, D)
    lives = [
        {"curve": name, "value": h.value, "ci_low": h.ci_low, "ci_high": h.ci_high,
         "undefined_resamples": h.undefined_resamples}
        for name, h in summary.half_lives.items() if h is not None
    ]  # fmt: skip
    document: dict[str, Any] = {
        "command": "recovery",
        "finding": finding,
        "claims": claims,
        "headline": headline(summary, D),
        "half_lives": lives,
        "quantities": QUANTITIES,
        "notes": summary.notes,
        "inputs": inputs,
        "versions": software_versions(),
        "date": utc_now(),
    }
    rows = result_rows(summary.curves)
    _parquet(out / "results.parquet", rows)
    _parquet(out / "samples.parquet", samples)
    pngs = figures(summary.curves, out)
    document["files"] = ["results.parquet", "samples.parquet", "report.html"]
    document["files"] += [p.name for p in pngs]
    at_ends = [r for r in rows if r["d"] in (1, D)]
    section = StudySection(
        directory=out, name="measure-recovery", title="Self-recovery (He et al. 2021)",
        description=finding, record={"date": document["date"]},
        summary={"claims": claims, "headline": document["headline"], "half-lives": lives,
                 f"every quantity at d = 1 and d = {D}": at_ends},
        figures=pngs,
    )  # fmt: skip
    heading = "Self-recovery of a model after a perturbed prefix"
    atomic_write_text(
        out / "report.html", _page(section, inputs, summary.notes, "recovery", heading)
    )
    result = {"keys": KEYS, **_jsonable(document)}
    atomic_write_json(out / "measure.json", result, sort_keys=False)
    return result
