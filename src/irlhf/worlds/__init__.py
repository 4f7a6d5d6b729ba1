"""Worlds hold the ground truth (expert, true reward); channels are what algorithms may see."""

from irlhf.worlds.automaton import PRESETS, AutomatonSpec, AutomatonWorld, make_world
from irlhf.worlds.base import BudgetExceeded, Demonstrations, ExpertOracle, World, rollout

__all__ = [
    "PRESETS",
    "AutomatonSpec",
    "AutomatonWorld",
    "BudgetExceeded",
    "Demonstrations",
    "ExpertOracle",
    "World",
    "describe_presets",
    "make_world",
    "rollout",
]


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
