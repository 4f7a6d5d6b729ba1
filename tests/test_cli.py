"""The `irlhf` command: one-line errors with exit code 2 and nothing written; the happy paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "experiments"))  # the toy kind and study

import tomltools  # noqa: E402
import toystudy  # noqa: E402
from test_experiment_config import FUZZ, VALID, invalid_configs  # noqa: E402

from irlhf.cli import app  # noqa: E402
from irlhf.experiments import kinds, read_results  # noqa: E402
from irlhf.studies import base  # noqa: E402

runner = CliRunner()


@pytest.fixture(autouse=True)
def toy_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the toy kind and study: the CLI is tested apart from the science modules."""
    monkeypatch.setattr(kinds, "KIND_MODULES", [])
    monkeypatch.setattr("irlhf.studies.STUDY_MODULES", [])
    monkeypatch.setattr(base, "STUDIES", {"toy": toystudy.STUDY})


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_usage_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(tomltools.dumps(raw), encoding="utf-8")
    return path


@settings(max_examples=60, **FUZZ)
@given(case=invalid_configs())
def test_fuzzed_invalid_configs_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, case: tuple
) -> None:
    raw, field = case
    path = write(tmp_path, raw)
    root = tmp_path / "root"
    for command in ("run", "sweep"):
        result = invoke(
            command, path, "--root", root, *(["--executor", "inline"] * (command == "sweep"))
        )
        if command == "run" and "sweep" in raw:
            continue  # `run` rejects every sweep file (tested below)
        assert_usage_error(result, f"{path}: ", f": {field}: ")
        assert not root.exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "{tmp}/absent.toml"], ["absent.toml: no such file"]),
        (["sweep", "{tmp}/absent.toml"], ["absent.toml: no such file"]),
        (["run", "{cfg_sweep}"], ["sweep: this file is a sweep of 2 runs; use `irlhf sweep`"]),
        (["sweep", "{cfg}", "--executor", "spark"], ["--executor: must be one of: local, ray"]),
        (["sweep", "{cfg}", "--address", "h:1"], ["--address: only used with --executor ray"]),
        (["sweep", "{cfg}", "--workers", "0"], ["--workers: must be >= 1"]),
        (
            ["study", "toy", "--profile", "huge"],
            ["--profile: must be one of: quick, default, full"],
        ),
        (["study", "nope"], ["study: must be one of: toy (got 'nope')"]),
        (["reproduce", "--profile", "fast"], ["--profile: must be one of"]),
        (["report", "{tmp}/nodir"], ["nodir: no such directory"]),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    cfg = write(tmp_path, VALID)
    cfg_sweep = tmp_path / "sweep.toml"
    cfg_sweep.write_text(tomltools.dumps({**VALID, "sweep": {"seed": [1, 2]}}))
    before = sorted(tmp_path.rglob("*"))
    filled = [a.format(tmp=tmp_path, cfg=cfg, cfg_sweep=cfg_sweep) for a in args]
    out = ["--root", tmp_path / "root"] if args[0] in ("run", "sweep") else []
    out = ["--out", tmp_path / "out"] if args[0] in ("study", "reproduce", "report") else out
    assert_usage_error(invoke(*filled, *out), *fragments)
    assert sorted(tmp_path.rglob("*")) == before, "bad input must not write anything"


def test_help_everywhere() -> None:
    for command in ([], ["run"], ["sweep"], ["study"], ["report"], ["reproduce"], ["worlds"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output, command


def test_run_then_cached(tmp_path: Path) -> None:
    cfg = write(tmp_path, VALID)
    first = invoke("run", cfg, "--root", tmp_path / "runs")
    assert first.exit_code == 0, first.output
    assert "total" in first.stdout and "counter" in first.stdout
    second = invoke("run", cfg, "--root", tmp_path / "runs")
    assert second.exit_code == 0 and "finished earlier" in second.stdout


def test_failed_run_exits_1(tmp_path: Path) -> None:
    cfg = write(tmp_path, {**VALID, "fail_on_seed": VALID["seed"]})
    result = invoke("run", cfg, "--root", tmp_path / "runs")
    assert result.exit_code == 1 and "deliberate failure" in result.stderr


def test_sweep_with_a_failing_point_writes_the_table_and_exits_1(tmp_path: Path) -> None:
    cfg = write(tmp_path, {**VALID, "fail_on_seed": 1, "sweep": {"seed": [0, 1, 2]}})
    result = invoke("sweep", cfg, "--root", tmp_path / "runs", "--executor", "inline")
    assert result.exit_code == 1 and "3 runs, 1 failed" in result.stdout
    assert "deliberate failure at seed 1" in result.stderr
    table = read_results(tmp_path / "runs" / "exp.parquet")
    assert table["run_id"].nunique() == 3 and (table["status"] == "failed").sum() == 1


def test_reproduce_runs_every_study_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = invoke("reproduce", "--profile", "quick", "--out", out, "--executor", "inline")
    assert result.exit_code == 0, result.output
    assert "report.html in" in result.stdout
    page = (out / "report.html").read_text()
    assert "Counters add up" in page and "mean total" in page and "data:image/png;base64" in page
    assert (out / "toy" / "summary.json").exists() and (out / "toy" / "results.parquet").exists()
    again = invoke("report", out / "toy", "--out", tmp_path / "again.html")
    assert again.exit_code == 0 and (tmp_path / "again.html").exists()


def test_study_command(tmp_path: Path) -> None:
    result = invoke(
        "study", "toy", "--profile", "quick", "--out", tmp_path / "toy", "--executor", "inline"
    )
    assert result.exit_code == 0, result.output
    assert "mean total" in result.stdout and (tmp_path / "toy" / "totals.png").exists()


def test_worlds_prints_something() -> None:
    result = invoke("worlds")
    assert result.exit_code == 0 and result.stdout.strip()
