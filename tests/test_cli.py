"""The `irlhf` command: one-line errors with exit code 2 and nothing written; the happy paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "experiments"))  # the toy kind and study

import tomltools  # noqa: E402
import toystudy  # noqa: E402
from test_experiment_config import FUZZ, VALID, invalid_configs  # noqa: E402
from toykind import MARKER_ENV  # noqa: E402

from irlhf import cli  # noqa: E402
from irlhf.cli import app  # noqa: E402
from irlhf.experiments import read_results  # noqa: E402
from irlhf.studies import base  # noqa: E402

runner = CliRunner()


@pytest.fixture(autouse=True)
def toy_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the toy kind and study: the CLI is tested apart from the science modules."""
    monkeypatch.setattr(cli, "_register_kinds", lambda: None)
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
        (["study", "toy", "--only", "seed"], ["--only: must be KEY=VALUE[,VALUE] (got 'seed')"]),
        (["study", "toy", "--only", "=1"], ["--only: must be KEY=VALUE[,VALUE]"]),
        (["study", "toy", "--only", "seed=1,"], ["--only: must be KEY=VALUE[,VALUE]"]),
        (
            ["study", "toy", "--only", "learner=tabular"],
            [
                "study toy (profile default): --only: no config of the grid has the field",
                "'learner' (fields that vary: seed; fixed fields are allowed too)",
            ],
        ),
        (
            ["study", "toy", "--only", "seed=1,7,x"],
            ["--only seed: no config has the value 7, x (values: 0, 1, 2)"],
        ),
        (
            ["study", "toy", "--only", "seed=1", "--only", "steps=5"],
            ["--only steps: no config has the value 5 (values: 6)"],
        ),
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


def test_study_only_runs_part_of_the_grid_into_the_same_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--only seed=0,2 runs two of the default grid's three runs and summarises those; the whole
    grid then runs only the third (the others are read back from the same run directories)."""
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    out = tmp_path / "toy"
    common = ["--profile", "default", "--out", out, "--executor", "inline"]
    part = invoke("study", "toy", *common, "--only", "seed=0,2", "--only", "world.mode=sum")
    assert part.exit_code == 0, part.output
    assert sorted(read_results(out / "results.parquet")["seed"].unique()) == [0, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_runs"] == 2 and [r["seed"] for r in summary["per_seed"]] == [0, 2]
    record = json.loads((out / "study.json").read_text())
    assert record["only"] == {"seed": ["0", "2"], "world.mode": ["sum"]}
    assert len(list((tmp_path / "markers").iterdir())) == 2
    whole = invoke("study", "toy", *common)
    assert whole.exit_code == 0, whole.output
    assert len(list((tmp_path / "markers").iterdir())) == 3  # only seed 1 ran
    assert json.loads((out / "study.json").read_text())["only"] is None
    assert json.loads((out / "summary.json").read_text())["n_runs"] == 3


def test_a_part_the_summary_cannot_use_exits_1_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def needs_three(table, out: Path) -> dict:
        if table["run_id"].nunique() < 3:
            raise ValueError("needs every seed")
        return toystudy.summarize(table, out)

    study = base.Study("toy", "t", "d", toystudy.configs, needs_three)
    monkeypatch.setattr(base, "STUDIES", {"toy": study})
    out = tmp_path / "toy"
    result = invoke("study", "toy", "--out", out, "--executor", "inline", "--only", "seed=1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: study toy: summarize failed: ValueError: needs every seed (runs are in "
        f"{out / 'runs'})"
    )
    assert read_results(out / "results.parquet")["seed"].unique().tolist() == [1]


def test_worlds_prints_something() -> None:
    result = invoke("worlds")
    assert result.exit_code == 0 and result.stdout.strip()


def test_reproduce_runs_a_study_in_each_of_its_reproduce_worlds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A study with worlds ("small", "large") and reproduce_worlds listing both: one directory
    per world (the default world's under the study's name), both in the report."""
    import dataclasses

    def configs(profile: str, world: str = "small") -> list:
        steps = 6 if world == "small" else 9
        return [toystudy.CounterConfig(seed=seed, steps=steps) for seed in range(2)]

    study = dataclasses.replace(
        toystudy.STUDY, configs=configs, worlds=("small", "large"),
        reproduce_worlds=("small", "large"),
    )  # fmt: skip
    monkeypatch.setattr(base, "STUDIES", {"toy": study})
    out = tmp_path / "results"
    result = invoke("reproduce", "--profile", "quick", "--out", out, "--executor", "inline")
    assert result.exit_code == 0, result.output
    small = json.loads((out / "toy" / "summary.json").read_text())
    large = json.loads((out / "toy-large" / "summary.json").read_text())
    assert small["n_runs"] == large["n_runs"] == 2
    # six vs nine uniform draws per step: the large world's totals are larger
    assert large["headline"][0]["value"] > small["headline"][0]["value"]
    listed = invoke("studies")
    assert "small, large" in listed.stdout
