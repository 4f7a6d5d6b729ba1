"""The `[world]` table of the imitation, rlhf and irl kinds: an automaton, or a neural LM world.

A config's world is one of

* an automaton (`AutomatonSpec`, the exact tabular core; no tag, so every automaton config
  resolves, and hashes, exactly as before the neural worlds were added);
* `kind = "flipflop"`: the flip-flop trap world (`irlhf.worlds.flipflop`: an automaton whose
  mode a causal transformer can read from the tokens; exact DP, tabular or neural learners);
* `kind = "oracle"`: the neural oracle world (`irlhf.worlds.oracle`: a random GPT-2 is the
  expert, a second random network the gold reward);
* `kind = "text"`: the real-text world (`irlhf.worlds.text`: a teacher LM trained on Shakespeare,
  cached under data/teachers, or a local Hugging Face model).

`WorldSpec` is the tagged union (the tag is the table's `kind`, absent = automaton),
`ExactWorldSpec` its automaton and flip-flop half (the worlds with exact DP), and `make_world`
builds the world a spec describes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BeforeValidator, Discriminator, Tag

from irlhf.worlds.automaton import AutomatonSpec, AutomatonWorld
from irlhf.worlds.flipflop import FlipFlopSpec, FlipFlopWorld
from irlhf.worlds.oracle import LMWorld, OracleSpec, OracleWorld
from irlhf.worlds.text import TextSpec, make_text_world

WORLDS = ("automaton", "flipflop", "oracle", "text")
"""World names, as `--world` and a `[world]` table's `kind` spell them."""


class FlipFlopWorldSpec(FlipFlopSpec):
    """A `FlipFlopSpec` tagged for a config's `[world]` table."""

    kind: Literal["flipflop"] = "flipflop"
    """The world: the flip-flop trap world."""


class OracleWorldSpec(OracleSpec):
    """An `OracleSpec` tagged for a config's `[world]` table."""

    kind: Literal["oracle"] = "oracle"
    """The world: the neural oracle world."""


class TextWorldSpec(TextSpec):
    """A `TextSpec` tagged for a config's `[world]` table."""

    kind: Literal["text"] = "text"
    """The world: the real-text world."""


def _tag(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("kind", "automaton")
    return world_name(value)


def _tagged(value: Any) -> Any:
    """Untagged neural specs become tagged ones; an explicit `kind = "automaton"` is dropped
    (the automaton spec has no tag field)."""
    if isinstance(value, FlipFlopSpec) and not isinstance(value, FlipFlopWorldSpec):
        return FlipFlopWorldSpec(**value.model_dump())
    if isinstance(value, OracleSpec) and not isinstance(value, OracleWorldSpec):
        return OracleWorldSpec(**value.model_dump())
    if isinstance(value, TextSpec) and not isinstance(value, TextWorldSpec):
        return TextWorldSpec(**value.model_dump())
    if isinstance(value, dict) and value.get("kind") == "automaton":
        return {k: v for k, v in value.items() if k != "kind"}
    return value


WorldSpec = Annotated[
    Annotated[AutomatonSpec, Tag("automaton")]
    | Annotated[FlipFlopWorldSpec, Tag("flipflop")]
    | Annotated[OracleWorldSpec, Tag("oracle")]
    | Annotated[TextWorldSpec, Tag("text")],
    Discriminator(_tag),
    BeforeValidator(_tagged),
]
"""A config's world: automaton (untagged), `kind = "flipflop"`, `"oracle"` or `"text"`."""

ExactWorldSpec = Annotated[
    Annotated[AutomatonSpec, Tag("automaton")] | Annotated[FlipFlopWorldSpec, Tag("flipflop")],
    Discriminator(_tag),
    BeforeValidator(_tagged),
]
"""A config's world with latent states and exact DP (the `irl` kind's): an automaton (untagged,
so it resolves and hashes as a bare `AutomatonSpec`) or `kind = "flipflop"`."""


def world_name(spec: object) -> str:
    """ "automaton", "flipflop", "oracle" or "text" for a world spec."""
    if isinstance(spec, FlipFlopSpec):
        return "flipflop"
    if isinstance(spec, OracleSpec):
        return "oracle"
    if isinstance(spec, TextSpec):
        return "text"
    if isinstance(spec, AutomatonSpec):
        return "automaton"
    raise TypeError(f"not a world spec: {type(spec).__name__}")


def is_neural(spec: object) -> bool:
    """Whether the world's expert is a language model (no latent states, no exact DP)."""
    return world_name(spec) not in ("automaton", "flipflop")


def make_world(
    spec: AutomatonSpec | FlipFlopSpec | OracleSpec | TextSpec,
) -> AutomatonWorld | LMWorld:
    """The world `spec` describes (the text world loads, or first trains, its cached teacher)."""
    name = world_name(spec)
    if name == "flipflop":
        return FlipFlopWorld(cast(FlipFlopSpec, spec))
    if name == "automaton":
        return AutomatonWorld(cast(AutomatonSpec, spec))
    if name == "oracle":
        return OracleWorld(cast(OracleSpec, spec))
    return make_text_world(cast(TextSpec, spec))
