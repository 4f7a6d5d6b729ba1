"""Worlds hold the ground truth (expert, true reward); channels are what algorithms may see.

The neural worlds (`OracleWorld`, `TextWorld`, `make_text_world`, their specs) import
transformers, so they are loaded on first use (`irlhf.worlds.OracleWorld`), not with this package.
"""

from irlhf.worlds.automaton import PRESETS, AutomatonSpec, AutomatonWorld
from irlhf.worlds.base import BudgetExceeded, Demonstrations, ExpertOracle, World, rollout
from irlhf.worlds.flipflop import FLIPFLOP_PRESETS, FlipFlopSpec, FlipFlopWorld, make_world

__all__ = [
    "FLIPFLOP_PRESETS",
    "PRESETS",
    "AutomatonSpec",
    "AutomatonWorld",
    "BudgetExceeded",
    "Demonstrations",
    "ExpertOracle",
    "FlipFlopSpec",
    "FlipFlopWorld",
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
    """A rich table of the world presets (automaton, then flip-flop) and every knob that differs
    from its family's defaults."""
    from rich.table import Table

    table = Table(title="automaton world presets (irlhf.worlds.make_world(name, **knobs))")
    table.add_column("preset", style="bold")
    table.add_column("what it is for")
    table.add_column("knobs (changed from the defaults)")
    captions = []
    families = (("", AutomatonSpec(), PRESETS), ("flipflop-", FlipFlopSpec(), FLIPFLOP_PRESETS))
    for prefix, base, presets in families:
        defaults = base.model_dump()
        for name, (what, spec) in presets.items():
            changed = {
                k: v for k, v in spec.model_dump().items() if k != "preset" and v != defaults[k]
            }
            knobs = ", ".join(f"{k}={v:g}" for k, v in changed.items()) or "-"
            table.add_row(prefix + name, what, knobs)
        knobs = ", ".join(f"{k}={v:g}" for k, v in defaults.items() if k != "preset")
        captions.append(f"{prefix or 'automaton '}defaults: {knobs}")
    table.caption = "\n".join(captions)
    return table
