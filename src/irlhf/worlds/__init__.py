"""Worlds hold the ground truth (expert, true reward); channels are what algorithms may see.

The neural worlds (`OracleWorld`, `TextWorld`, `make_text_world`, their specs) import
transformers, so they are loaded on first use (`irlhf.worlds.OracleWorld`), not with this package.
"""

from irlhf.worlds.automaton import PRESETS, AutomatonSpec, AutomatonWorld, make_world
from irlhf.worlds.base import BudgetExceeded, Demonstrations, ExpertOracle, World, rollout

__all__ = [
    "PRESETS",
    "AutomatonSpec",
    "AutomatonWorld",
    "BudgetExceeded",
    "Demonstrations",
    "ExpertOracle",
    "LMWorld",
    "OracleSpec",
    "OracleWorld",
    "TextSpec",
    "TextWorld",
    "World",
    "describe_presets",
    "make_text_world",
    "make_world",
    "rollout",
]

_LAZY = {
    "LMWorld": "irlhf.worlds.oracle",
    "OracleSpec": "irlhf.worlds.oracle",
    "OracleWorld": "irlhf.worlds.oracle",
    "TextSpec": "irlhf.worlds.text",
    "TextWorld": "irlhf.worlds.text",
    "make_text_world": "irlhf.worlds.text",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'irlhf.worlds' has no attribute {name!r}")


def describe_presets():  # -> rich.table.Table
    """A rich table of the world presets and every knob that differs from the defaults."""
    from rich.table import Table

    defaults = AutomatonSpec().model_dump()
    table = Table(title="automaton world presets (irlhf.worlds.make_world(name, **knobs))")
    table.add_column("preset", style="bold")
    table.add_column("what it is for")
    table.add_column("knobs (changed from the defaults)")
    for name, (what, spec) in PRESETS.items():
        changed = {k: v for k, v in spec.model_dump().items() if k != "preset" and v != defaults[k]}
        table.add_row(name, what, ", ".join(f"{k}={v:g}" for k, v in changed.items()) or "-")
    knobs = ", ".join(f"{k}={v:g}" for k, v in defaults.items() if k != "preset")
    table.caption = f"defaults: {knobs}"
    return table
