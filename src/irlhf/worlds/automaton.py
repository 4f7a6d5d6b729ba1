"""The exact automaton world: a latent automaton over tokens, with traps.

Latent states are *good* or *trap*. From a good state most tokens lead to good states and a few
*trap tokens* lead into trap states; from a trap state only `round(exit_prob * vocab_size)` tokens
lead back to a good state, so `exit_prob` is the chance that an uninformed (uniform) policy leaves a
trap in one step: the recoverability knob. exit_prob -> 0 makes traps absorbing (behaviour
cloning's error compounds quadratically in the horizon, Ross & Bagnell 2010); exit_prob -> 1
makes mistakes self-correcting (linear). Trap states cost `trap_cost` every step; tokens in good
states carry reward `reward_spread * N(0, 1)`.

The expert is the soft-optimal policy for the reward at temperature `alpha` (discounted soft value
iteration with `gamma`, `irlhf.planning.soft_value_iteration`), so the MaxEnt-IRL assumption holds
exactly (Ziebart et al. 2008).
A neural policy sees tokens only: the prompt is one token, `vocab_size + start_state`, and every
later state is a function of the prefix (`states`).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from irlhf.planning import soft_value_iteration
from irlhf.policies.tabular import TabularPolicy
from irlhf.types import Sequences


class AutomatonSpec(BaseModel):
    """Every knob of an automaton world, with defaults (the `absorbing` regime). Also the
    `[world]` table of an experiment config (validated; an error names the knob)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    preset: str = "custom"
    """The preset this spec started from (informational)."""
    n_states: int = Field(80, ge=1)
    """Number of latent states, good and trap together."""
    vocab_size: int = Field(64, ge=1)
    """Number of action tokens."""
    horizon: int = Field(128, ge=1)
    """Default episode length in tokens (completion length)."""
    trap_fraction: float = Field(0.5, ge=0.0, lt=1.0)
    """Fraction of states that are traps (at least one state stays good)."""
    exit_prob: float = Field(1 / 64, ge=0.0, le=1.0)
    """Fraction of tokens that leave a trap state (the uniform policy's exit chance per step)."""
    n_trap_tokens: int = Field(2, ge=0)
    """Tokens per good state that lead into a trap."""
    trap_cost: float = Field(2.0, ge=0.0)
    """Reward lost per step spent in a trap state (reward units)."""
    reward_spread: float = Field(0.0, ge=0.0)
    """Std of the reward of tokens in good states (reward units)."""
    n_start_states: int = Field(4, ge=1)
    """Number of good states the start distribution is uniform over."""
    alpha: float = Field(0.1, gt=0.0)
    """Temperature of the soft-optimal expert (reward units)."""
    gamma: float = Field(0.95, ge=0.0, lt=1.0)
    """Discount of the expert's soft value iteration."""
    seed: int = 0
    """Seed of the world's structure (transitions, rewards, start states)."""

    def replace(self, **changes: object) -> AutomatonSpec:
        unknown = set(changes) - set(type(self).model_fields)
        if unknown:
            allowed = ", ".join(type(self).model_fields)
            raise ValueError(f"unknown automaton knob(s) {sorted(unknown)}; allowed: {allowed}")
        return AutomatonSpec(**{**self.model_dump(), **changes})

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: object) -> object:
        """`{preset = "absorbing", horizon = 64}`: the preset's knobs, then the overrides."""
        if isinstance(data, dict) and data.get("preset", "custom") != "custom":
            name = data["preset"]
            if name not in PRESETS:
                raise ValueError(f"unknown world preset {name!r}; allowed: {', '.join(PRESETS)}")
            return {**PRESETS[name][1].model_dump(), **data}
        return data


def _preset(name: str, **knobs: object) -> AutomatonSpec:
    return AutomatonSpec(**knobs).model_copy(update={"preset": name})


PRESETS: dict[str, tuple[str, AutomatonSpec]] = {
    "absorbing": (
        "traps are (almost) absorbing: one exit token in 64; little reward spread (compounding)",
        _preset("absorbing"),
    ),
    "recoverable": (
        "every token leaves a trap: mistakes self-correct in one step (compounding control)",
        _preset("recoverable", exit_prob=1.0),
    ),
    "spread": (
        "reward spread among safe tokens, short horizon: room to beat the demos (outperform)",
        _preset(
            "spread",
            n_states=32,
            vocab_size=16,
            horizon=32,
            reward_spread=1.0,
            trap_cost=2.0,
            exit_prob=0.25,
            alpha=1.0,
        ),
    ),
    "tiny": (
        "3 states, 2 tokens, horizon 4: small enough to enumerate every sequence (tests)",
        _preset(
            "tiny",
            n_states=3,
            vocab_size=2,
            horizon=4,
            trap_fraction=0.34,
            n_trap_tokens=1,
            exit_prob=0.5,
            reward_spread=0.5,
            n_start_states=1,
            alpha=0.5,
        ),
    ),
}


class AutomatonWorld:
    """An automaton world built from an `AutomatonSpec` (or keyword knobs).

    Public tensors: transition [S, V] long, reward_table [S, V] float64, start [S] float64,
    is_trap [S] bool, expert (TabularPolicy), expert_q [S, V], expert_value [S].
    """

    def __init__(self, spec: AutomatonSpec | None = None, **knobs: object) -> None:
        self.spec = (
            (spec or AutomatonSpec()).replace(**knobs) if knobs else (spec or AutomatonSpec())
        )
        s = self.spec
        gen = torch.Generator().manual_seed(s.seed)
        n_trap = min(round(s.trap_fraction * s.n_states), s.n_states - 1)
        good = torch.arange(s.n_states - n_trap)
        traps = torch.arange(s.n_states - n_trap, s.n_states)
        self.is_trap = torch.zeros(s.n_states, dtype=torch.bool)
        self.is_trap[traps] = True

        def pick(pool: Tensor, shape: tuple[int, ...]) -> Tensor:
            return pool[torch.randint(len(pool), shape, generator=gen)]

        # Good states: every token goes to a random good state, except trap tokens.
        transition = pick(good, (s.n_states, s.vocab_size))
        n_trap_tokens = min(s.n_trap_tokens, s.vocab_size - 1) if n_trap else 0
        for state in good.tolist() if n_trap_tokens else []:
            trap_tokens = torch.randperm(s.vocab_size, generator=gen)[:n_trap_tokens]
            transition[state, trap_tokens] = pick(traps, (n_trap_tokens,))
        # Trap states: only exit tokens go back to a good state.
        n_exit = round(s.exit_prob * s.vocab_size)
        for state in traps.tolist():
            transition[state] = pick(traps, (s.vocab_size,))
            exits = torch.randperm(s.vocab_size, generator=gen)[:n_exit]
            transition[state, exits] = pick(good, (n_exit,))
        self.transition = transition

        reward = s.reward_spread * torch.randn(s.n_states, s.vocab_size, generator=gen).double()
        reward[traps] = -s.trap_cost
        self.reward_table = reward

        n_start = min(s.n_start_states, len(good))
        starts = good[torch.randperm(len(good), generator=gen)[:n_start]]
        self.start = torch.zeros(s.n_states, dtype=torch.float64)
        self.start[starts] = 1.0 / n_start

        self.expert_q, self.expert_value = soft_value_iteration(
            self.transition, self.reward_table, s.alpha, s.gamma
        )
        self.expert = TabularPolicy(torch.softmax(self.expert_q / s.alpha, dim=1))

    def __repr__(self) -> str:
        return f"AutomatonWorld({self.spec})"

    # --- sizes -------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return self.spec.n_states

    @property
    def vocab_size(self) -> int:
        """Number of action tokens."""
        return self.spec.vocab_size

    @property
    def token_vocab_size(self) -> int:
        """Action tokens plus one prompt token per state (what a neural policy embeds)."""
        return self.spec.vocab_size + self.spec.n_states

    @property
    def horizon(self) -> int:
        return self.spec.horizon

    # --- dynamics (algorithms may use these: "we know the environment dynamics") -------------
    def sample_prompts(self, n: int, generator: torch.Generator) -> Tensor:
        """[n, 1] prompt tokens, one per start state drawn from `start`."""
        starts = torch.multinomial(self.start, n, replacement=True, generator=generator)
        return (starts + self.vocab_size).unsqueeze(1)

    def states(self, seqs: Sequences) -> Tensor:
        """[B, T] long: the latent state in which token t was chosen (the start state at the
        prompt position). Positions after the first padding token repeat the last state."""
        if seqs.prompt_length != 1:
            raise ValueError(f"automaton prompts are one token long, got {seqs.prompt_length}")
        start = seqs.tokens[:, 0] - self.vocab_size
        if bool(((start < 0) | (start >= self.n_states)).any()):
            raise ValueError("the first token of an automaton sequence must be a prompt token")
        states = torch.empty_like(seqs.tokens)
        states[:, 0] = start
        current = start
        for t in range(1, seqs.length):
            states[:, t] = current
            actions = seqs.tokens[:, t].clamp(0, self.vocab_size - 1)
            current = torch.where(
                seqs.completion_mask[:, t], self.transition[current, actions], current
            )
        return states

    def rollout(
        self, policy: TabularPolicy, n: int, generator: torch.Generator, horizon: int | None = None
    ) -> Sequences:
        """n sequences of `horizon` tokens sampled from a tabular policy."""
        horizon = self.horizon if horizon is None else horizon
        prompts = self.sample_prompts(n, generator)
        state = prompts[:, 0] - self.vocab_size
        actions = torch.empty(n, horizon, dtype=torch.long)
        for t in range(horizon):
            actions[:, t] = policy.sample(state, generator)
            state = self.transition[state, actions[:, t]]
        return Sequences.from_prompt_and_completion(prompts, actions)

    def dynamics(self) -> Dynamics:
        """The view of this world an algorithm may hold: prompts and transitions, no reward."""
        return Dynamics(self)

    def demonstrator(self, temperature: float = 1.0, epsilon: float = 0.0) -> TabularPolicy:
        """The expert degraded by sampling temperature and epsilon-mixing with uniform noise."""
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be between 0 and 1 (got {epsilon})")
        return self.expert.with_temperature(temperature).with_epsilon(epsilon)

    def expert_probs(self, seqs: Sequences) -> Tensor:
        """[B, T, V] the expert's next-token distribution at every position."""
        return self.expert.probs[self.states(seqs)]

    def demonstrator_probs(
        self, seqs: Sequences, temperature: float = 1.0, epsilon: float = 0.0
    ) -> Tensor:
        """[B, T, V] the degraded expert's (`demonstrator`) distribution at every position."""
        return self._teacher(temperature, epsilon).probs[self.states(seqs)]

    def next_demonstrator_probs(
        self, prefixes: Sequences, temperature: float = 1.0, epsilon: float = 0.0
    ) -> Tensor:
        """[B, V] the degraded expert's distribution of the token after each (unpadded) prefix."""
        state = self.states(prefixes)[:, -1]  # the state the prefix's last token was chosen in
        if prefixes.length > 1:  # ... and the one it led to (a prompt alone: the start state)
            state = self.transition[state, prefixes.tokens[:, -1]]
        return self._teacher(temperature, epsilon).probs[state]

    def _teacher(self, temperature: float, epsilon: float) -> TabularPolicy:
        """The expert itself when undegraded (no copy of its table), else the demonstrator."""
        if temperature == 1.0 and epsilon == 0.0:
            return self.expert
        return self.demonstrator(temperature, epsilon)

    # --- ground truth (metrics and reports only; training code never calls these) -----------
    def true_rewards(self, seqs: Sequences) -> Tensor:
        """[B, T] float64 reward of each completion token (0 elsewhere)."""
        rewards = self.reward_table[self.states(seqs), seqs.tokens.clamp(0, self.vocab_size - 1)]
        return rewards * seqs.completion_mask

    def true_return(self, seqs: Sequences) -> Tensor:
        """[B] float64 undiscounted return of each sequence."""
        return self.true_rewards(seqs).sum(dim=1)


def make_world(preset: str = "absorbing", **knobs: object) -> AutomatonWorld:
    """A preset world with some knobs overridden: `make_world("absorbing", horizon=64)`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown world preset {preset!r}; allowed: {', '.join(PRESETS)}")
    return AutomatonWorld(AutomatonSpec(preset=preset, **knobs))


class Dynamics:
    """What an algorithm may know of an automaton world: its sizes, start prompts and transitions
    (as in the essay's IRL, "we know the environment dynamics"), never its reward or expert."""

    def __init__(self, world: AutomatonWorld) -> None:
        self._world = world
        self.n_states = world.n_states
        self.vocab_size = world.vocab_size
        self.token_vocab_size = world.token_vocab_size
        self.horizon = world.horizon
        self.transition = world.transition

    def sample_prompts(self, n: int, generator: torch.Generator) -> Tensor:
        return self._world.sample_prompts(n, generator)

    def states(self, seqs: Sequences) -> Tensor:
        return self._world.states(seqs)

    def rollout(
        self, policy: TabularPolicy, n: int, generator: torch.Generator, horizon: int | None = None
    ) -> Sequences:
        return self._world.rollout(policy, n, generator, horizon)
