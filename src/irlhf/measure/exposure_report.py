"""What `irlhf measure exposure` writes: measure.json (documented keys), results.parquet (one row
per decoding x l x quantity), samples.parquet (every continuation), PNG figures and report.html
(the study report's style: the finding and its verdicts first, then the numbers).

Every file is written atomically (`irlhf.experiments.storage`), and only after the measurement
has run: bad input never leaves a partial directory.
"""

from __future__ import annotations

import io
import math
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irlhf.experiments.provenance import software_versions, utc_now
from irlhf.experiments.storage import atomic_write_bytes, atomic_write_json, atomic_write_text
from irlhf.report.figures import label, new_figure, save_figure
from irlhf.report.html import StudySection, html_table, render_section

Curves = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
"""quantity -> (value, ci_low, ci_high), each [L] over l = 1..L (nan: undefined)."""

QUANTITIES = {
    "eps": "eps_<=l: mean per-step KL(expert || h) over the first l tokens of the expert's own "
    "continuations, h = the decoding's distribution (nats)",
    "R": "R_<=l: summed per-step KL(expert || h) over the first l tokens of the decoding's own "
    "continuations, h = the decoding's distribution (nats)",
    "acc_err": "AccErr_<=l = R_<=l / eps_<=l (ratio; between l and l^2 in theory); left out where "
    "eps_<=l is 0 or +inf",
    "pct_ex_acc_err": "%ExAccErr_<=l = (R_<=l - l eps_<=l) / (l eps_<=l) * 100 (percent); left "
    "out where eps_<=l is 0 or +inf",
    "kl_step_expert": "per-step KL(expert || h) at step l on the expert's continuations (nats)",
    "kl_step_own": "per-step KL(expert || h) at step l on the decoding's continuations (nats)",
    "nll_oracle": "NLL-oracle: mean -log expert(token) over the first l tokens of the "
    "continuations (nats per token); under decoding 'expert', of the expert's own",
}
for _name in ("eps", "R", "acc_err", "pct_ex_acc_err", "kl_step_expert", "kl_step_own"):
    QUANTITIES[f"{_name}_model"] = (
        f"as {_name}, with h = the model's own (unfiltered) distribution p_theta; contexts as "
        "there (finite for every decoding)"
    )

KEYS = {
    "keys": "this dictionary: what each key of measure.json means",
    "command": "'exposure'",
    "finding": "the result in one paragraph: %ExAccErr and AccErr at l = L per decoding",
    "claims": "rows {claim, verdict, evidence}: verdict 'holds' when the 95% interval of "
    "%ExAccErr_<=L lies above 0, 'does not hold' when it lies at or below 0, else 'inconclusive'",
    "headline": "rows {name, value, ci_low, ci_high}: the main quantities at l = L",
    "at_L": "rows {decoding, quantity, value, ci_low, ci_high} of every quantity at l = L",
    "quantities": "quantity name -> its definition (the rows of results.parquet)",
    "notes": "what is +inf or undefined (left out), where and why",
    "inputs": "the command's resolved arguments and the numbers of prompts and samples",
    "files": "the other files written",
    "versions": "software versions",
    "date": "when it was written (UTC)",
    "values": "floats; +inf is written as the string 'inf'",
}


def _json_value(x: float) -> float | str | None:
    if math.isnan(x):
        return None
    return ("inf" if x > 0 else "-inf") if math.isinf(x) else float(x)


def _ranges(lengths: np.ndarray) -> str:
    """Sorted integers as runs: "1..3, 7"."""
    runs: list[list[int]] = []
    for x in (int(v) for v in lengths):
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs)


def result_rows(table: dict[str, Curves]) -> list[dict[str, Any]]:
    """One row per decoding x l x quantity with a defined value (NaN rows are left out)."""
    rows = []
    for decoding, curves in table.items():
        for quantity, (value, low, high) in curves.items():
            for j in np.flatnonzero(~np.isnan(value)):
                rows.append(
                    {"decoding": decoding, "l": int(j + 1), "quantity": quantity,
                     "value": float(value[j]), "ci_low": float(low[j]), "ci_high": float(high[j])}
                )  # fmt: skip
    return rows


def notes(table: dict[str, Curves]) -> list[str]:
    """What is +inf or left out, per decoding and quantity family."""
    out = []
    for decoding, curves in table.items():
        for suffix, h in (("", "the decoding's distribution"), ("_model", "the model's")):
            if f"eps{suffix}" not in curves:
                continue
            lengths = np.arange(1, len(curves[f"eps{suffix}"][0]) + 1)
            eps, R = curves[f"eps{suffix}"][0], curves[f"R{suffix}"][0]
            for name, values, where in (
                ("eps", eps, "the expert's continuations"),
                ("R", R, f"the {decoding} continuations"),
            ):
                if np.isinf(values).any():
                    out.append(
                        f"{decoding}: {name}{suffix}_<=l is +inf at l = "
                        f"{_ranges(lengths[np.isinf(values)])}: on {where}, {h} gives "
                        "probability 0 to a token the expert emits (KL = +inf)"
                    )
            undefined = (eps == 0) | np.isinf(eps)
            if undefined.any():
                out.append(
                    f"{decoding}: acc_err{suffix} and pct_ex_acc_err{suffix} are left out at "
                    f"l = {_ranges(lengths[undefined])} (eps{suffix}_<=l is 0 or +inf: the ratio "
                    "says nothing about compounding)"
                )
    return out


def _at(curves: Curves, name: str, index: int) -> tuple[float, float, float]:
    value, low, high = curves[name]
    return float(value[index]), float(low[index]), float(high[index])


def _fmt(x: float) -> str:
    return ("+inf" if x > 0 else "-inf") if math.isinf(x) else f"{x:.4g}"


def _interval(v: tuple[float, float, float]) -> str:
    return f"{_fmt(v[0])} [95% CI {_fmt(v[1])}, {_fmt(v[2])}]"


def _main_suffix(curves: Curves, index: int) -> str:
    """'' when the decoding's own %ExAccErr is finite at l = L, else '_model'."""
    value = curves["pct_ex_acc_err"][0][index]
    return "" if np.isfinite(value) else "_model"


def claims_and_finding(table: dict[str, Curves], L: int) -> tuple[list[dict[str, Any]], str]:
    """Verdict rows (%ExAccErr_<=L above 0?) and the one-paragraph finding, per decoding."""
    rows, sentences = [], []
    for decoding, curves in table.items():
        if decoding == "expert":
            continue
        suffix = _main_suffix(curves, L - 1)
        h = "the decoding's distribution" if not suffix else "the model's distribution"
        pct = _at(curves, f"pct_ex_acc_err{suffix}", L - 1)
        acc = _at(curves, f"acc_err{suffix}", L - 1)
        if math.isnan(pct[0]):
            verdict, evidence = "inconclusive", "eps_<=L is 0 or +inf: %ExAccErr is undefined"
            sentences.append(
                f"{decoding}: %ExAccErr at L = {L} is undefined (eps_<=L is 0 or +inf)."
            )
        else:
            verdict = "holds" if pct[1] > 0 else "does not hold" if pct[2] <= 0 else "inconclusive"
            evidence = f"%ExAccErr_<=L = {_interval(pct)} with h = {h}; AccErr = {_interval(acc)}"
            sentences.append(
                f"exposure bias ({decoding}): %ExAccErr at L = {L} is {_interval(pct)}; AccErr "
                f"{_interval(acc)} (between L = {L} and L^2 = {L * L}), h = {h}."
            )
        claim = (
            f"The model's errors accumulate faster than linearly along its own {decoding} "
            f"continuations (%ExAccErr_<=L > 0 at L = {L})"
        )
        rows.append({"claim": claim, "verdict": verdict, "evidence": evidence})
    return rows, " ".join(sentences)


def headline(table: dict[str, Curves], L: int) -> list[dict[str, Any]]:
    """The main quantities at l = L per decoding: with h = the decoding's distribution where its
    %ExAccErr is finite, else with h = the model's distribution (named so)."""
    rows = []
    for decoding, curves in table.items():
        suffix = "" if decoding == "expert" else _main_suffix(curves, L - 1)
        names = ["nll_oracle"] if decoding == "expert" else [
            f"pct_ex_acc_err{suffix}", f"acc_err{suffix}", f"eps{suffix}", f"R{suffix}",
            "nll_oracle",
        ]  # fmt: skip
        for name in names:
            value, low, high = _at(curves, name, L - 1)
            if not math.isnan(value):
                rows.append({"name": f"{name}_<=L ({decoding})", "value": value,
                             "ci_low": low, "ci_high": high})  # fmt: skip
    return rows


# ---- figures ----------------------------------------------------------------------------------


def _band(ax: Any, curves: Curves, name: str, text: str, scale: np.ndarray | None = None) -> None:
    value, low, high = curves[name]
    lengths = np.arange(1, len(value) + 1)
    s = np.ones_like(value) if scale is None else scale
    ok = np.isfinite(value)
    if not ok.any():
        return
    ax.plot(lengths[ok], value[ok] / s[ok], label=text)
    band = ok & np.isfinite(low) & np.isfinite(high)
    ax.fill_between(lengths[band], low[band] / s[band], high[band] / s[band], alpha=0.2)


def _own_differs(curves: Curves, name: str) -> bool:
    """Whether the decoding's own curve adds anything to the model's (finite and different)."""
    own, model = curves[name][0], curves[f"{name}_model"][0]
    return bool(np.isfinite(own).any()) and not np.allclose(own, model, equal_nan=True)


def figures(table: dict[str, Curves], out: Path) -> list[Path]:
    """exposure_eps_R.png, exposure_acc_err.png, exposure_kl_steps.png, exposure_nll_oracle.png."""
    decodings = [d for d in table if d != "expert"]
    L = len(table[decodings[0]]["eps"][0])
    lengths = np.arange(1, L + 1).astype(float)
    paths = []
    x = label("continuation length l", "tokens")

    fig, ax = new_figure("Per-step error: expert's vs own continuations", x,
                         label("eps_<=l and R_<=l / l", "nats per token"))  # fmt: skip
    _band(ax, table[decodings[0]], "eps_model", "eps (expert's continuations)")
    for d in decodings:
        _band(ax, table[d], "R_model", f"R / l ({d})", lengths)
        if _own_differs(table[d], "R"):
            _band(ax, table[d], "eps", f"eps, h = {d}")
            _band(ax, table[d], "R", f"R / l, h = {d}", lengths)
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "exposure_eps_R.png"))

    fig, ax = new_figure("Accumulated error (Arora et al. 2022)", x, label("AccErr_<=l", "ratio"))
    ax.plot(lengths, lengths, "k:", label="l (no accumulation)")
    for d in decodings:
        _band(ax, table[d], "acc_err_model", f"AccErr ({d})")
        if _own_differs(table[d], "acc_err"):
            _band(ax, table[d], "acc_err", f"AccErr, h = {d}")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "exposure_acc_err.png"))

    fig, ax = new_figure("Per-step KL(expert || model)", x, label("KL at step l", "nats"))
    _band(ax, table[decodings[0]], "kl_step_expert_model", "expert's continuations")
    for d in decodings:
        _band(ax, table[d], "kl_step_own_model", f"{d} continuations")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "exposure_kl_steps.png"))

    y = label("mean -log expert over the first l tokens", "nats/token")
    fig, ax = new_figure("NLL-oracle of the continuations", x, y)
    for d in table:
        _band(ax, table[d], "nll_oracle", d)
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "exposure_nll_oracle.png"))
    return paths


# ---- files ------------------------------------------------------------------------------------


def _parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def _page(
    section: StudySection,
    inputs: dict[str, Any],
    notes_: list[str],
    command: str = "exposure",
    heading: str = "Exposure bias of a model against its expert",
) -> str:
    """The page of one measurement (`irlhf measure COMMAND`): its section, inputs and notes."""
    css = resources.files("irlhf.report").joinpath("style.css").read_text(encoding="utf-8")
    shown = {k: v for k, v in inputs.items() if not isinstance(v, (list, dict))}
    shown |= {k: ", ".join(map(str, v)) for k, v in inputs.items() if isinstance(v, list)}
    extra = html_table([{"input": k, "value": v} for k, v in shown.items()], caption="Inputs")
    if notes_:
        extra += "<h3>Notes</h3><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes_) + "</ul>"
    body = render_section(section).replace("</section>", extra + "</section>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>irlhf measure {command}</title><style>{css}</style></head><body><main>"
        f"<header><h1>{escape(heading)}</h1>"
        f"<p>irlhf measure {command} · generated {utc_now()}</p></header>"
        f"{body}</main></body></html>\n"
    )


def write_outputs(
    out: Path, table: dict[str, Curves], inputs: dict[str, Any], samples: list[dict[str, Any]]
) -> dict[str, Any]:
    """Write every file into `out` and return the contents of measure.json."""
    out = Path(out)
    L = int(inputs["max_new_tokens"])
    claims, finding = claims_and_finding(table, L)
    rows = result_rows(table)
    at_L = [{k: r[k] for k in ("decoding", "quantity", "value", "ci_low", "ci_high")}
            for r in rows if r["l"] == L]  # fmt: skip
    notes_ = notes(table)
    files = ["results.parquet", "samples.parquet", "report.html"]
    summary = {
        "command": "exposure",
        "finding": finding,
        "claims": claims,
        "headline": headline(table, L),
        "at_L": at_L,
        "quantities": QUANTITIES,
        "notes": notes_,
        "inputs": inputs,
        "versions": software_versions(),
        "date": utc_now(),
    }
    _parquet(out / "results.parquet", rows)
    _parquet(out / "samples.parquet", samples)
    pngs = figures(table, out)
    files += [p.name for p in pngs]
    summary["files"] = files
    section = StudySection(
        directory=out, name="measure-exposure", title="Exposure bias (Arora et al. 2022)",
        description=finding, record={"date": summary["date"]},
        summary={"claims": claims, "headline": summary["headline"],
                 f"every quantity at L = {L}": at_L},
        figures=pngs,
    )  # fmt: skip
    atomic_write_text(out / "report.html", _page(section, inputs, notes_))
    document = {"keys": KEYS, **_jsonable(summary)}
    atomic_write_json(out / "measure.json", document, sort_keys=False)
    return document


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return _json_value(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
