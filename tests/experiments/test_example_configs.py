"""Every example config in configs/ validates against the registered kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from irlhf.experiments import load_kinds
from irlhf.experiments.config import load_sweep

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_validates(path: Path) -> None:
    load_kinds()
    assert load_sweep(path)
