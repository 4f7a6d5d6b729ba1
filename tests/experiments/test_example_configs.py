"""Every example config in configs/ validates against the registered kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

import irlhf.kinds  # noqa: F401  (registers the kinds)
from irlhf.experiments.config import load_sweep

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_validates(path: Path) -> None:
    assert load_sweep(path)


def test_the_irl_examples_configure_their_method_in_one_table() -> None:
    """An irl config has one `[method]` table, the chosen method's (tag filled in)."""
    configs = Path(__file__).resolve().parents[2] / "configs"
    (maxent,) = load_sweep(configs / "irl_maxent.toml")
    assert maxent.method.name == "maxent_irl" and maxent.method.steps == 300
    (gail,) = load_sweep(configs / "irl_gail_neural.toml")
    assert gail.method.name == "neural_gail" and gail.method.rounds == 20
    assert gail.method.policy_step.prompts_per_iteration == 32
