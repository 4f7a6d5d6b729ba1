"""The flip-flop trap world: an automaton whose latent state a causal transformer can read.

The state is (mode, last k tokens), mode in {good, trap depth 1, ..., trap depth `min_stay`}.
A few *trap-entry tokens* X, the same in every context, switch good mode to trap depth 1; in a
trap every token goes one level deeper (depth `min_stay` stays there), and from depth
`min_stay` the *exit tokens* E (`round(exit_prob * vocab_size)` of them) return to good mode.
So the mode is a flip-flop ("was the latest X, or E after `min_stay` trap steps, an X?"): one
attention layer's work, where the 80-state random automaton of `irlhf.worlds.automaton` is not
readable from tokens. Exits only from depth `min_stay` >= 2 keep a window-1 student from seeing
the X it just emitted and learning to exit (the prototype's finding,
shared/prototypes/flipflop/README.md).

Rewards: in good mode `reward_spread * N(0, 1)` on (last k tokens, token), minus
`exit_penalty` on the exit tokens (unless every token exits), so the soft-optimal expert rarely
emits E there; `-trap_cost` for every token chosen in a trap. The expert is the soft-optimal
policy at temperature `alpha` and discount `gamma` (`irlhf.planning.soft_value_iteration`),
exactly as in `AutomatonWorld`, and it almost never enters a trap: demonstrations show no
recovery. Episodes start uniformly in the good states; the prompt token is
`vocab_size + start_state`, as in every automaton world.

`FlipFlopWorld` is an `AutomatonWorld` (same public tensors, `states`, `rollout`, `dynamics`,
the expert and demonstrator views, `true_rewards`) that fills its tables by these rules, so every
exact tool of `irlhf.metrics.exposure` and `irlhf.planning` applies. State index:
`mode * V**k + context`, context = the last k tokens in base V (most recent last); a start
context stands for k tokens before the prompt.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from irlhf.planning import soft_value_iteration
from irlhf.policies.tabular import TabularPolicy
from irlhf.worlds.automaton import PRESETS as AUTOMATON_PRESETS
from irlhf.worlds.automaton import AutomatonSpec, AutomatonWorld
from irlhf.worlds.automaton import make_world as make_automaton


class FlipFlopSpec(BaseModel):
    """Every knob of a flip-flop world, with defaults (the `absorbing` preset). Also the
    `[world]` table (`kind = "flipflop"`) of an experiment config (validated; an error names the
    knob)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    preset: str = "custom"
    """The preset this spec started from (informational): "absorbing", "recoverable", "spread"
    (`make_world` calls them "flipflop-absorbing", ...)."""
    vocab_size: int = Field(16, ge=2)
    """Number of action tokens V."""
    context: int = Field(1, ge=1, le=2)
    """k, the last tokens a good-mode state remembers (tokens; 1 or 2): V**k contexts."""
    horizon: int = Field(128, ge=1)
    """Default episode length (tokens)."""
    n_trap_tokens: int = Field(2, ge=1)
    """Number of trap-entry tokens X, shared by every context (tokens)."""
    exit_prob: float = Field(1 / 16, ge=0.0, le=1.0)
    """Fraction of the vocabulary that exits a trap from depth `min_stay` (round(exit_prob * V)
    exit tokens E; 1 = every token: recoverable)."""
    min_stay: int = Field(2, ge=1)
    """Trap depth (steps spent in the trap) from which an exit token leaves it (steps)."""
    reward_spread: float = Field(0.1, ge=0.0)
    """Std of the good-mode reward of (last k tokens, token) (reward units)."""
    exit_penalty: float = Field(1.0, ge=0.0)
    """Reward subtracted from an exit token in good mode (reward units; none when every token
    exits)."""
    trap_cost: float = Field(2.0, ge=0.0)
    """Reward lost per token chosen in a trap (reward units)."""
    alpha: float = Field(0.3, gt=0.0)
    """Temperature of the soft-optimal expert (reward units)."""
    gamma: float = Field(0.95, ge=0.0, lt=1.0)
    """Discount of the expert's soft value iteration."""
    seed: int = 0
    """Seed of the world's structure (which tokens are X and E, the good-mode rewards)."""

    @property
    def n_exit_tokens(self) -> int:
        return round(self.exit_prob * self.vocab_size)

    @property
    def n_contexts(self) -> int:
        return self.vocab_size**self.context

    @property
    def n_states(self) -> int:
        """(min_stay + 1) modes x V**k contexts."""
        return (self.min_stay + 1) * self.n_contexts

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: object) -> object:
        """`{preset = "absorbing", horizon = 64}`: the preset's knobs, then the overrides."""
        if isinstance(data, dict) and data.get("preset", "custom") != "custom":
            name = data["preset"]
            if name not in FLIPFLOP_PRESETS:
                allowed = ", ".join(FLIPFLOP_PRESETS)
                raise ValueError(f"unknown flip-flop preset {name!r}; allowed: {allowed}")
            return {**FLIPFLOP_PRESETS[name][1].model_dump(), **data}
        return data

    @model_validator(mode="after")
    def _tokens_fit(self) -> FlipFlopSpec:
        n_exit = self.n_exit_tokens
        if self.n_trap_tokens >= self.vocab_size:
            raise ValueError(
                f"n_trap_tokens ({self.n_trap_tokens}) must be below vocab_size ({self.vocab_size})"
            )
        if n_exit < self.vocab_size and self.n_trap_tokens + n_exit > self.vocab_size:
            raise ValueError(
                f"n_trap_tokens + round(exit_prob * vocab_size) ({self.n_trap_tokens} + {n_exit}) "
                f"must not exceed vocab_size ({self.vocab_size}) unless every token exits"
            )
        if self.n_states > 20_000:
            raise ValueError(f"vocab_size**context too large: {self.n_states} states (max 20000)")
        return self

    def replace(self, **changes: object) -> FlipFlopSpec:
        unknown = set(changes) - set(type(self).model_fields)
        if unknown:
            allowed = ", ".join(type(self).model_fields)
            raise ValueError(f"unknown flip-flop knob(s) {sorted(unknown)}; allowed: {allowed}")
        return FlipFlopSpec(**{**self.model_dump(), **changes})


def _preset(name: str, **knobs: object) -> FlipFlopSpec:
    return FlipFlopSpec(**knobs).model_copy(update={"preset": name})  # type: ignore[arg-type]


FLIPFLOP_PRESETS: dict[str, tuple[str, FlipFlopSpec]] = {
    "absorbing": (
        "flip-flop: one exit token in 16, only from the 2nd trap step; the expert never enters "
        "a trap, so demonstrations show no recovery (compounding, neural students)",
        _preset("absorbing"),
    ),
    "recoverable": (
        "flip-flop: every token exits from the 2nd trap step (compounding control)",
        _preset("recoverable", exit_prob=1.0),
    ),
    "spread": (
        "flip-flop: reward spread 1 among good-mode tokens, horizon 32: room to beat the "
        "demonstrations (outperform; provisional)",
        _preset("spread", reward_spread=1.0, exit_prob=0.25, horizon=32),
    ),
}
"""Spec preset name -> (what it is for, spec); `make_world` names them "flipflop-<name>"."""
PREFIX = "flipflop-"


class FlipFlopWorld(AutomatonWorld):
    """An `AutomatonWorld` whose tables follow the flip-flop rules (module docstring).

    Extra tensors: is_entry [V] bool (X), is_exit [V] bool (E), mode [S] long (0 good, j trap
    depth j), context [S] long (the last k tokens in base V)."""

    spec: FlipFlopSpec  # type: ignore[assignment]

    def __init__(self, spec: FlipFlopSpec | None = None, **knobs: object) -> None:
        spec = spec or FlipFlopSpec()
        self.spec = spec.replace(**knobs) if knobs else spec
        s = self.spec
        V, C, m = s.vocab_size, s.n_contexts, s.min_stay
        gen = torch.Generator().manual_seed(s.seed)
        order = torch.randperm(V, generator=gen)
        n_exit = s.n_exit_tokens
        self.is_exit = torch.zeros(V, dtype=torch.bool)
        self.is_exit[order[:n_exit]] = True
        pool = order[n_exit:] if n_exit < V else order  # X are never E unless every token is
        self.is_entry = torch.zeros(V, dtype=torch.bool)
        self.is_entry[pool[torch.randperm(len(pool), generator=gen)[: s.n_trap_tokens]]] = True

        context = torch.arange(C)
        tokens = torch.arange(V)
        shifted = (context.unsqueeze(1) * V + tokens.unsqueeze(0)) % C  # [C, V] next context
        modes = []  # [C, V] next mode from each mode
        modes.append(torch.where(self.is_entry, 1, 0).expand(C, V))
        for depth in range(1, m + 1):
            deeper = torch.full((C, V), min(depth + 1, m))
            modes.append(torch.where(self.is_exit, 0, deeper) if depth == m else deeper)
        self.transition = torch.cat([mode * C + shifted for mode in modes]).long()
        self.mode = torch.arange(m + 1).repeat_interleave(C)
        self.context = context.repeat(m + 1)
        self.is_trap = self.mode > 0

        good = s.reward_spread * torch.randn(C, V, generator=gen).double()
        if n_exit < V:
            good = good - s.exit_penalty * self.is_exit.double()
        trap = torch.full((m * C, V), -s.trap_cost, dtype=torch.float64)
        self.reward_table = torch.cat([good, trap])

        self.start = torch.zeros(s.n_states, dtype=torch.float64)
        self.start[:C] = 1.0 / C

        self.expert_q, self.expert_value = soft_value_iteration(
            self.transition, self.reward_table, s.alpha, s.gamma
        )
        self.expert = TabularPolicy(torch.softmax(self.expert_q / s.alpha, dim=1))

    def __repr__(self) -> str:
        return f"FlipFlopWorld({self.spec})"


def make_world(preset: str = "absorbing", **knobs: object) -> AutomatonWorld:
    """A preset world with some knobs overridden: an automaton preset (`make_world("absorbing",
    horizon=64)`) or a flip-flop one (`make_world("flipflop-absorbing", horizon=64)`)."""
    if preset.startswith(PREFIX) and preset[len(PREFIX) :] in FLIPFLOP_PRESETS:
        return FlipFlopWorld(FlipFlopSpec(preset=preset[len(PREFIX) :], **knobs))  # type: ignore[arg-type]
    if preset not in AUTOMATON_PRESETS:
        allowed = ", ".join([*AUTOMATON_PRESETS, *(PREFIX + n for n in FLIPFLOP_PRESETS)])
        raise ValueError(f"unknown world preset {preset!r}; allowed: {allowed}")
    return make_automaton(preset, **knobs)


__all__ = ["FLIPFLOP_PRESETS", "AutomatonSpec", "FlipFlopSpec", "FlipFlopWorld", "make_world"]
