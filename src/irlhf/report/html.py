"""The static HTML report: one self-contained page with a section per study directory.

Each section opens with the study's title and claim, then its verdicts (summary.json "claims":
rows {claim, verdict, evidence}, the verdict "holds", "does not hold" or "inconclusive" computed
by the study from its intervals), its headline numbers with their intervals ("headline"), every
PNG figure in the directory (embedded as base64, so the single file works anywhere without a
server), then every other table in the summary (a table longer than `_OPEN_ROWS` rows or wider
than `_OPEN_COLUMNS` columns is collapsed into a <details> element, and every table scrolls
inside its own box, so none overflows the page), the failed runs, the configs of the grid (a
collapsible grid view: the fields that vary and the fixed ones) and the software versions the
study ran with.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from irlhf.experiments.config import flatten
from irlhf.experiments.errors import ConfigError
from irlhf.experiments.provenance import software_versions, utc_now
from irlhf.experiments.storage import atomic_write_text, read_json

HEADLINE_KEY = "headline"
CLAIMS_KEY = "claims"
VERDICTS = ("holds", "does not hold", "inconclusive")
_OPEN_ROWS, _OPEN_COLUMNS = 12, 9
_HEADLINE_COLUMNS = ("name", "value", "ci_low", "ci_high")
_MAX_CONFIGS_LISTED = 50
_MAX_FAILURES_LISTED = 20


@dataclass
class StudySection:
    """What the report shows of one study directory."""

    directory: Path
    name: str
    title: str
    description: str = ""
    record: dict[str, Any] = field(default_factory=dict)  # study.json
    summary: dict[str, Any] = field(default_factory=dict)  # summary.json
    figures: list[Path] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The section's id in the page: its directory's name (a study run in two worlds has
        two directories, compounding and compounding-flipflop, so two distinct anchors)."""
        return self.directory.name


def _read_optional(path: Path, default: Any) -> Any:
    return read_json(path) if path.exists() else default


def _failures(directory: Path) -> list[dict[str, Any]]:
    """run_id and error of the failed runs in results.parquet."""
    path = directory / "results.parquet"
    if not path.exists():
        return []
    from irlhf.experiments.results import read_results

    table = read_results(path)
    failed = table[table["status"] != "done"].drop_duplicates("run_id")
    return failed[["run_id", "error"]].to_dict("records")


def load_section(directory: Path) -> StudySection:
    """Read a study directory (written by `run_study`); ConfigError if it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError("", "no such directory", str(directory))
    if not (directory / "summary.json").exists() and not (directory / "study.json").exists():
        detail = "not a study directory (no summary.json or study.json)"
        raise ConfigError("", detail, str(directory))
    record = _read_optional(directory / "study.json", {})
    return StudySection(
        directory=directory,
        name=record.get("name", directory.name),
        title=record.get("title", directory.name),
        description=record.get("description", ""),
        record=record,
        summary=_read_optional(directory / "summary.json", {}),
        figures=sorted(directory.glob("*.png")),
        configs=_read_optional(directory / "configs.json", []),
        failures=_failures(directory),
    )


# ---- formatting -------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_value(value: Any) -> str:
    """Numbers to 4 significant digits (scientific when very large or small), the rest as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _td(value: Any) -> str:
    css = ' class="num"' if _is_number(value) else ""
    return f"<td{css}>{_esc(format_value(value))}</td>"


def html_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    caption: str | None = None,
    headers: dict[str, str] | None = None,
    css_class: str = "",
) -> str:
    """An HTML table of row dicts (columns: the union of their keys, in first-seen order)."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    headers = headers or {}
    head = "".join(f"<th>{_esc(headers.get(c, c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_td(row.get(c)) for c in columns) + "</tr>" for row in rows)
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    cls = f' class="{css_class}"' if css_class else ""
    return (
        f'<div class="table-wrap"><table{cls}>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _is_row_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def _headline_html(rows: list[dict[str, Any]]) -> str:
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in _HEADLINE_COLUMNS]
    shown = []
    for row in rows:
        low, high = row.get("ci_low"), row.get("ci_high")
        interval = (
            f"[{format_value(low)}, {format_value(high)}]"
            if low is not None or high is not None
            else None
        )
        shown.append({**row, "interval": interval})
    columns = ["name", "value", "interval", *extra]
    headers = {"name": "quantity", "interval": "confidence interval"}
    return "<h3>Headline numbers</h3>" + html_table(
        shown, columns, headers=headers, css_class="headline"
    )


def _verdicts_html(claims: list[dict[str, Any]]) -> str:
    """Each claim with its verdict as a coloured badge and the numbers that decide it."""
    items = []
    for row in claims:
        verdict = str(row.get("verdict", "inconclusive"))
        css = verdict.replace(" ", "-") if verdict in VERDICTS else "inconclusive"
        items.append(
            f'<li><span class="verdict {css}">{_esc(verdict)}</span> {_esc(row.get("claim", ""))}'
            f'<span class="evidence">{_esc(row.get("evidence", ""))}</span></li>'
        )
    return f'<h3>Verdicts</h3><ul class="verdicts">{"".join(items)}</ul>'


def _big(rows: list[dict[str, Any]]) -> bool:
    columns = dict.fromkeys(k for row in rows for k in row)
    return len(rows) > _OPEN_ROWS or len(columns) > _OPEN_COLUMNS


def _tables_html(summary: dict[str, Any]) -> str:
    """Each list of rows but the claims and the headline as a table (big ones collapsed), then
    the loose scalars, then anything else as JSON."""
    parts = []
    scalars, other = {}, {}
    for key, value in summary.items():
        if key in (HEADLINE_KEY, CLAIMS_KEY):
            continue
        if _is_row_list(value):
            table = html_table(value)
            if _big(value):
                parts.append(
                    f"<details><summary>{_esc(key)} ({len(value)} rows)</summary>{table}</details>"
                )
            else:
                parts.append(f"<h3>{_esc(key)}</h3>" + table)
        elif value is None or isinstance(value, (str, int, float, bool)):
            scalars[key] = value
        else:
            other[key] = value
    if scalars:
        rows = [{"key": k, "value": v} for k, v in scalars.items()]
        parts.append("<h3>Other numbers</h3>" + html_table(rows))
    if other:
        text = _esc(json.dumps(other, indent=2, default=str))
        parts.append(f"<details><summary>More summary data</summary><pre>{text}</pre></details>")
    return "".join(parts)


def _figure_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = path.stem.replace("_", " ")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(caption)}">'
        f"<figcaption>{_esc(path.name)}</figcaption></figure>"
    )


def config_grid(configs: Sequence[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(varying fields with their distinct values, fixed fields with their value)."""
    flat = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    varying, fixed = [], []
    for key in keys:
        values = list(dict.fromkeys(json.dumps(f.get(key), sort_keys=True) for f in flat))
        if len(values) > 1:
            varying.append({"field": key, "values": ", ".join(values), "count": len(values)})
        else:
            fixed.append({"field": key, "value": json.loads(values[0])})
    return varying, fixed


def _runs_table(
    configs: Sequence[dict[str, Any]], varying: list[dict], run_ids: Sequence[str]
) -> str:
    """One row per run: its id (the run directory's name, listed in study.json beside
    configs.json's configs; left out for a study directory that does not list them) and the
    swept fields."""
    fields = [v["field"] for v in varying]
    listed = configs[:_MAX_CONFIGS_LISTED]
    rows = [{f: flatten(c).get(f) for f in fields} for c in listed]
    if len(run_ids) == len(configs):
        rows = [{"run_id": run_id, **row} for run_id, row in zip(run_ids, rows, strict=False)]
    more = len(configs) - len(listed)
    caption = f"Runs (first {len(listed)}; all in configs.json)" if more else "Runs"
    return html_table(rows, caption=caption)


def _configs_html(configs: list[dict[str, Any]], run_ids: Sequence[str]) -> str:
    if not configs:
        return ""
    varying, fixed = config_grid(configs)
    return (
        f"<details><summary>Configs used ({len(configs)} distinct runs)</summary>"
        + (html_table(varying, caption="Swept fields") if varying else "")
        + html_table(fixed, caption="Fixed fields")
        + _runs_table(configs, varying, run_ids)
        + "</details>"
    )


def _versions_html(versions: dict[str, Any], summary_text: str) -> str:
    if not versions:
        return ""
    rows = [{"software": k, "version": v} for k, v in versions.items()]
    return f"<details><summary>{_esc(summary_text)}</summary>{html_table(rows)}</details>"


def _failures_html(section: StudySection) -> str:
    if not section.failures:
        return ""
    shown = section.failures[:_MAX_FAILURES_LISTED]
    return (
        f'<p class="error">{len(section.failures)} run(s) failed; their numbers are missing.</p>'
        + html_table(shown, caption="Failed runs (traceback.txt in each run directory)")
    )


def _meta_line(record: dict[str, Any]) -> str:
    bits = [f"study <code>{_esc(record.get('name', ''))}</code>"]
    if record.get("profile"):
        bits.append(f"profile {_esc(record['profile'])}")
    if record.get("only"):
        part = " ".join(f"{k}={','.join(map(str, v))}" for k, v in record["only"].items())
        bits.append(f"part of the grid: <code>{_esc(part)}</code>")
    if "n_runs" in record:
        bits.append(f"{record['n_runs']} runs ({record.get('n_failed', 0)} failed)")
    if record.get("run_seconds") is not None:
        bits.append(f"{record['run_seconds']:.0f} s of run time")
    if record.get("date"):
        bits.append(f"run {_esc(record['date'])}")
    return '<p class="meta">' + " · ".join(bits) + "</p>"


def render_section(section: StudySection) -> str:
    """One study's section of the page."""
    error = section.record.get("error") or section.summary.get("error")
    summary = section.summary
    claims = summary.get(CLAIMS_KEY) or []
    headline = summary.get(HEADLINE_KEY) or []
    return (
        f'<section class="study" id="{_esc(section.anchor)}">'
        f"<h2>{_esc(section.title)}</h2>"
        + _meta_line({"name": section.name, **section.record})
        + (f'<p class="claim">{_esc(section.description)}</p>' if section.description else "")
        + (f'<p class="error">{_esc(error)}</p>' if error else "")
        + (_verdicts_html(claims) if _is_row_list(claims) else "")
        + (_headline_html(headline) if _is_row_list(headline) else "")
        + "".join(_figure_html(p) for p in section.figures)
        + _tables_html(summary)
        + _failures_html(section)
        + _configs_html(section.configs, section.record.get("run_ids", []))
        + _versions_html(section.record.get("versions", {}), "Software versions of this study")
        + "</section>"
    )


def _css() -> str:
    return resources.files("irlhf.report").joinpath("style.css").read_text(encoding="utf-8")


def render_report(sections: Sequence[StudySection], title: str = "Why do we need RLHF?") -> str:
    """The whole page."""
    toc = "".join(f'<li><a href="#{_esc(s.anchor)}">{_esc(s.title)}</a></li>' for s in sections)
    versions = _versions_html(software_versions(), "Software that wrote this report")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)} — irlhf report</title><style>{_css()}</style></head><body><main>"
        f"<header><h1>{_esc(title)}</h1>"
        f"<p>irlhf report · {len(sections)} studies · generated {_esc(utc_now())}</p></header>"
        f"<nav><strong>Studies</strong><ol>{toc}</ol></nav>"
        + "".join(render_section(s) for s in sections)
        + f"<footer>{versions}</footer></main></body></html>\n"
    )


def write_report(dirs: Sequence[Path], out_html: Path) -> Path:
    """Write one self-contained HTML page for the study directories `dirs` (validated first)."""
    sections = [load_section(Path(d)) for d in dirs]
    atomic_write_text(Path(out_html), render_report(sections))
    return Path(out_html)
