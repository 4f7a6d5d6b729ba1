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
    from dataclasses import asdict, fields

    from rich.table import Table

    defaults = asdict(AutomatonSpec())
    table = Table(title="automaton world presets (irlhf.worlds.make_world(name, **knobs))")
    table.add_column("preset", style="bold")
    table.add_column("what it is for")
    table.add_column("knobs (changed from the defaults)")
    for name, (what, spec) in PRESETS.items():
        changed = {k: v for k, v in asdict(spec).items() if v != defaults[k]}
        table.add_row(name, what, ", ".join(f"{k}={v:g}" for k, v in changed.items()) or "-")
    knobs = ", ".join(f"{f.name}={defaults[f.name]:g}" for f in fields(AutomatonSpec))
    table.caption = f"defaults: {knobs}"
    return table
