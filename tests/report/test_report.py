"""The HTML report of a (hand-made) study directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from irlhf.experiments import ConfigError
from irlhf.report import label, new_figure, save_figure, write_report
from irlhf.report.html import config_grid, format_value


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    out = tmp_path / "compounding"
    out.mkdir()
    record = {
        "name": "compounding",
        "title": "Errors compound <quadratically>",
        "description": "Behaviour cloning's regret grows like T^2 when traps absorb.",
        "profile": "quick",
        "date": "2026-01-01T00:00:00+00:00",
        "versions": {"python": "3.11", "torch": "2.13.0"},
        "n_runs": 4,
        "n_failed": 0,
        "run_seconds": 12.0,
        "run_ids": ["0123456789abcdef", "fedcba9876543210"],  # one per configs.json entry
    }
    summary = {
        "headline": [
            {"name": "BC exponent", "value": 1.84, "ci_low": 1.71, "ci_high": 1.97},
            {"name": "DAgger exponent", "value": 1.12, "ci_low": 1.05, "ci_high": 1.19},
        ],
        "exponents": [{"method": "bc", "traps": "absorbing", "exponent": 1.84}],
        "horizons": 5,
    }
    configs = [{"kind": "imitation", "seed": s, "world": {"exit_prob": 0.1}} for s in (0, 1)]
    (out / "study.json").write_text(json.dumps(record))
    (out / "summary.json").write_text(json.dumps(summary))
    (out / "configs.json").write_text(json.dumps(configs))
    fig, ax = new_figure("Regret", label("horizon T", "tokens"), label("regret", "nats"))
    ax.plot([1, 2], [1, 4])
    save_figure(fig, out / "regret.png")
    return out


def test_report_shows_title_headline_tables_figure_configs_versions(
    study_dir: Path, tmp_path: Path
) -> None:
    page = write_report([study_dir], tmp_path / "report.html").read_text()
    assert "Errors compound &lt;quadratically&gt;" in page  # escaped
    assert "Behaviour cloning&#x27;s regret grows" in page
    assert '<table class="headline">' in page and "BC exponent" in page
    assert "[1.71, 1.97]" in page and ">1.84<" in page
    assert "<h3>exponents</h3>" in page and "absorbing" in page
    assert page.count('src="data:image/png;base64,') == 1
    assert "<summary>Configs used (2 distinct runs)</summary>" in page
    assert "<caption>Swept fields</caption>" in page and "fedcba9876543210" in page
    assert "Software versions of this study" in page and "2.13.0" in page
    assert 'href="#compounding"' in page and "<style>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from a server


def test_config_grid_separates_swept_and_fixed_fields() -> None:
    varying, fixed = config_grid([{"a": 1, "w": {"p": 0.1}}, {"a": 2, "w": {"p": 0.1}}])
    assert varying == [{"field": "a", "values": "1, 2", "count": 2}]
    assert fixed == [{"field": "w.p", "value": 0.1}]


def test_number_formatting() -> None:
    assert format_value(1.23456) == "1.235"
    assert format_value(123456.0) == "1.235e+05"
    assert format_value(None) == "–" and format_value(float("nan")) == "–"
    assert format_value(7) == "7"


def test_not_a_study_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty: not a study directory"):
        write_report([tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="absent: no such directory"):
        write_report([tmp_path / "absent"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_a_section_opens_with_claim_then_verdicts_headline_figures_and_collapses_big_tables(
    study_dir: Path, tmp_path: Path
) -> None:
    summary = json.loads((study_dir / "summary.json").read_text())
    summary["claims"] = [
        {"claim": "BC compounds", "verdict": "holds", "evidence": "exponent 1.84 [1.71, 1.97]"},
        {"claim": "DAgger is linear", "verdict": "inconclusive", "evidence": "1.27 [1.13, 1.40]"},
        {"claim": "IRL is linear", "verdict": "does not hold", "evidence": "1.8 [1.7, 1.9]"},
    ]
    summary["many_rows"] = [{"L": L, "regret": 0.1 * L} for L in range(40)]
    (study_dir / "summary.json").write_text(json.dumps(summary))
    page = write_report([study_dir], tmp_path / "report.html").read_text()
    order = [
        page.index('class="claim"'),
        page.index("<h3>Verdicts</h3>"),
        page.index('<table class="headline">'),
        page.index("data:image/png;base64,"),
        page.index("<h3>exponents</h3>"),
    ]
    assert order == sorted(order)
    assert '<span class="verdict holds">holds</span> BC compounds' in page
    assert '<span class="verdict does-not-hold">does not hold</span>' in page
    assert '<span class="verdict inconclusive">inconclusive</span>' in page
    assert "1.27 [1.13, 1.40]" in page
    # a 40-row table is collapsed; the 1-row one is not
    assert "<details><summary>many_rows (40 rows)</summary>" in page
    assert "<h3>many_rows</h3>" not in page and page.count("<h3>Verdicts</h3>") == 1


def test_a_study_in_two_worlds_gets_two_anchors(study_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "compounding-flipflop"
    other.mkdir()
    for name in ("study.json", "summary.json", "configs.json", "regret.png"):
        (other / name).write_bytes((study_dir / name).read_bytes())
    page = write_report([study_dir, other], tmp_path / "report.html").read_text()
    assert 'id="compounding"' in page and 'id="compounding-flipflop"' in page
    assert 'href="#compounding-flipflop"' in page
