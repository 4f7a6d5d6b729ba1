"""Studies on the platform: grid -> runs -> table -> summary, validated before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import toystudy
from toykind import MARKER_ENV, CounterConfig

from irlhf.experiments import ConfigError, read_results
from irlhf.studies import base
from irlhf.studies.base import Study, run_studies, run_study, select_configs


@pytest.fixture(autouse=True)
def only_toy_studies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "STUDIES", {"toy": toystudy.STUDY})


def test_run_study_writes_table_summary_figures_and_record(tmp_path: Path) -> None:
    summary = run_study("toy", "quick", tmp_path / "toy", executor="inline", progress=False)
    out = tmp_path / "toy"
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["n_runs"] == 2 and summary["headline"][0]["name"] == "mean total"
    table = read_results(out / "results.parquet")
    assert set(table["metric"]) == {"total", "mean"} and table["run_id"].nunique() == 2
    record = json.loads((out / "study.json").read_text())
    assert record["title"] == "Counters add up" and record["profile"] == "quick"
    assert record["n_runs"] == 2 and record["n_failed"] == 0 and "torch" in record["versions"]
    assert len(json.loads((out / "configs.json").read_text())) == 2
    # the run ids of configs.json's configs, the names of their run directories
    assert record["run_ids"] == list(table["run_id"].unique()) and record["only"] is None
    assert all((out / "runs" / "counter" / run_id).is_dir() for run_id in record["run_ids"])
    assert (out / "totals.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_is_served_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "markers"))
    first = run_study("toy", "default", tmp_path / "toy", executor="inline", progress=False)
    second = run_study("toy", "default", tmp_path / "toy", executor="inline", progress=False)
    assert first == second and len(list((tmp_path / "markers").iterdir())) == 3


@pytest.mark.parametrize(
    ("name", "profile", "message"),
    [
        ("toy", "huge", "--profile: must be one of: quick, default, full (got 'huge')"),
        ("nope", "quick", "study: must be one of: toy (got 'nope')"),
    ],
)
def test_bad_names_are_config_errors_and_write_nothing(
    tmp_path: Path, name: str, profile: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        run_study(name, profile, tmp_path / "out", executor="inline")
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


def test_an_invalid_grid_names_the_study_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = Study("broken", "t", "d", lambda p: [CounterConfig(seed=-1)], toystudy.summarize)
    monkeypatch.setitem(base.STUDIES, "broken", broken)
    with pytest.raises(ConfigError, match=r"^study broken \(profile quick\): seed: must be >= 0"):
        run_studies({"toy": tmp_path / "toy", "broken": tmp_path / "b"}, "quick", "inline")
    assert not any(tmp_path.iterdir())


def test_a_failing_summary_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(table: object, out: Path) -> dict:
        raise ValueError("no numbers")

    monkeypatch.setitem(base.STUDIES, "toy", Study("toy", "t", "d", toystudy.configs, explode))
    summaries = run_studies(
        {"toy": tmp_path}, "quick", "inline", progress=False, raise_errors=False
    )
    assert summaries == {"toy": {"error": "summarize failed: ValueError: no numbers"}}
    assert json.loads((tmp_path / "study.json").read_text())["error"].endswith("no numbers")
    with pytest.raises(ValueError, match="no numbers"):
        run_study("toy", "quick", tmp_path, executor="inline", progress=False)


def test_select_configs_keeps_the_configs_matching_every_key() -> None:
    grid = [CounterConfig(seed=0, steps=6), CounterConfig(seed=1, steps=7, offset=0.5)]
    assert select_configs(grid, {"seed": ["1", "0"]}) == grid
    assert select_configs(grid, {"seed": ["1"], "steps": ["7"]}) == grid[1:]
    assert select_configs(grid, {"offset": ["0.50"], "world.mode": ["sum"]}) == grid[1:]
    assert select_configs(grid, {"fail_on_seed": ["null"]}) == grid
    with pytest.raises(ConfigError, match=r"^--only: no config of the grid has seed=0 and st"):
        select_configs(grid, {"seed": ["0"], "steps": ["7"]})
    with pytest.raises(ConfigError, match=r"field 'L' \(fields that vary: offset, seed, steps;"):
        select_configs(grid, {"L": ["1"]})
    with pytest.raises(ConfigError, match=r"^--only world.mode: .* value max \(values: sum\)$"):
        select_configs(grid, {"world.mode": ["max"]})
