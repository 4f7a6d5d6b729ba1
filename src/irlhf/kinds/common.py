"""What several experiment kinds share: the learner and demonstration tables of a config, the
annotator table, building a blank learner, collecting the run's demonstrations, logging a
training loop, checkpointing a neural policy and turning exposure metrics into records.

Nothing here trains anything: the kinds (`imitation`, `irl`, `rlhf`, `degeneration`,
`overoptimization`) compose these pieces with a world and an algorithm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from irlhf.experiments import RunContext
from irlhf.kinds.world_spec import is_neural, world_name
from irlhf.metrics.exposure import ExposureBias
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy
from irlhf.types import Sequences
from irlhf.worlds import AutomatonWorld, Demonstrations, World, rollout
from irlhf.worlds.oracle import LMWorld

if TYPE_CHECKING:
    from irlhf.policies.causal_lm import CausalLMPolicy

FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
"""Every table of a kind's config: immutable, no unknown keys, field docstrings kept."""


class PolicySpec(BaseModel):
    """The learner: a table over latent states, or a tiny causal LM that sees tokens only."""

    model_config = FROZEN
    kind: Literal["tabular", "causal_lm"] = "tabular"
    """"tabular" (exact metrics) or "causal_lm" (a tiny transformer, Monte-Carlo metrics)."""
    arch: Literal["gpt2", "llama", "bloom"] = "gpt2"
    """Neural architecture: "gpt2" (learned positions), "llama" (rotary) or "bloom" (ALiBi, a fixed
    per-head recency bias)."""
    n_layer: int = Field(2, ge=0)
    """Neural: transformer blocks (0 = a bigram model: embeddings and the output layer)."""
    n_embd: int = Field(64, ge=8)
    """Neural: width."""
    n_head: int = Field(4, ge=1)
    """Neural: attention heads (must divide n_embd)."""
    act_epsilon: float = Field(0.0, ge=0.0, lt=1.0)
    """Neural: a known acting error, pi = (1 - act_epsilon) network + act_epsilon uniform, in
    training roll-outs, scores and evaluation alike (`CausalLMPolicy.act_epsilon`); 0 = none."""
    window: int | None = Field(None, ge=1)
    """Neural: attention limited to the last `window` tokens (a sliding window; None = the whole
    context): the misspecification knob. LLaMA only (`CausalLMPolicy.tiny`)."""

    @model_validator(mode="after")
    def _window_needs_llama(self) -> PolicySpec:
        if self.window is not None and self.arch != "llama":
            raise ValueError(f"policy.window needs arch 'llama', got {self.arch!r}")
        return self


class DemoSpec(BaseModel):
    """The demonstrations: how many, and how suboptimal the demonstrator is."""

    model_config = FROZEN
    n: int = Field(50, ge=1)
    """Number of demonstration sequences (each `world.horizon` tokens long)."""
    temperature: float = Field(1.0, ge=0.0)
    """Demonstrator = expert at this sampling temperature (0 = greedy)."""
    epsilon: float = Field(0.0, ge=0.0, le=1.0)
    """... mixed with uniform noise with this weight."""


class AnnotatorSpec(BaseModel):
    """The human stand-in: Bradley-Terry on the true return, plus label flips."""

    model_config = FROZEN
    beta: float = Field(1.0, ge=0.0)
    """Rationality (per reward unit); 0 = coin flips."""
    flip_prob: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a label is flipped (label noise)."""


class LearnerRunConfig(Protocol):
    """The fields of a kind's config that the helpers below read (pydantic models all)."""

    @property
    def seed(self) -> int: ...
    @property
    def world(self) -> BaseModel: ...
    @property
    def policy(self) -> PolicySpec: ...


class DemonstratedRunConfig(Protocol):
    @property
    def demonstrations(self) -> DemoSpec: ...


def check_neural_world(config: LearnerRunConfig) -> None:
    """A neural LM world has no latent states: its learner must be a causal LM."""
    if is_neural(config.world) and config.policy.kind == "tabular":
        raise ValueError(
            f'policy.kind must be "causal_lm" in the {world_name(config.world)} world '
            "(a table needs the automaton's latent states)"
        )


def build_policy(
    config: LearnerRunConfig, world: AutomatonWorld | LMWorld
) -> TabularPolicy | CausalLMPolicy:
    """A blank learner of the configured kind (`config.policy`) for `world`."""
    if config.policy.kind == "tabular":  # an automaton world (`check_neural_world`)
        return TabularPolicy.uniform(cast(AutomatonWorld, world).n_states, world.vocab_size)
    from irlhf.policies.causal_lm import CausalLMPolicy, default_device

    p = config.policy
    if p.n_embd % p.n_head:
        raise ValueError(f"policy.n_head ({p.n_head}) must divide policy.n_embd ({p.n_embd})")
    policy = CausalLMPolicy.tiny(
        world.token_vocab_size,
        action_vocab_size=world.vocab_size,
        n_layer=p.n_layer,
        n_embd=p.n_embd,
        n_head=p.n_head,
        max_length=getattr(world, "prompt_length", 1) + world.horizon,  # automaton: 1 token
        arch=p.arch,
        seed=config.seed,
        act_epsilon=p.act_epsilon,
        window=p.window,
    )
    return policy.to(default_device())


def collect_demonstrations(
    config: DemonstratedRunConfig, world: World, generator: torch.Generator
) -> Demonstrations:
    """The run's demonstrations (the `[demonstrations]` table), drawn from `generator`."""
    d = config.demonstrations
    return Demonstrations.collect(world, d.n, generator, d.temperature, d.epsilon)


def model_state(policy: CausalLMPolicy) -> dict[str, Tensor]:
    """A neural policy's weights as checkpoint tensors (on the CPU, contiguous)."""
    return {k: v.detach().cpu().contiguous() for k, v in policy.model.state_dict().items()}


def mc_return(
    world: World, policy: TabularPolicy | Policy, n: int, generator: torch.Generator
) -> tuple[float, float, Sequences]:
    """Monte-Carlo true return of `policy` in `world` (metric side: reads the truth): the mean
    and its standard error over `n` fresh samples, and the samples."""
    seqs = rollout(world, policy, n, generator).to("cpu")
    returns = world.true_return(seqs)
    return float(returns.mean()), float(returns.std() / n**0.5), seqs


def log_training(ctx: RunContext, records: list[dict], limit: int = 200) -> None:
    """Log about `limit` of a training loop's records, evenly spaced (the last one included), and
    every budget record (`oracle/queries`, `gkd/on_policy_fraction`, `dagger/beta`): those are
    the feedback accounting, not a curve to thin."""
    step = max(1, len(records) // limit)
    for i, record in enumerate(records):
        budget = any(k in record for k in ("oracle/queries", "gkd/on_policy_fraction"))
        if budget or i % step == 0 or i == len(records) - 1:
            ctx.log(record)


def exposure_records(exposure: ExposureBias) -> list[dict]:
    """One record per metric and prefix length L where the metric is defined: eps, R (and R_se)
    may be +inf (the model gives probability 0 to a token the expert emits); acc_err and
    pct_ex_acc_err only where 0 < eps_<=L < inf. Then one `exposure_note` record per note
    (value 1, the text in `note`) saying what is infinite or undefined, and where."""
    names = ["regret", "eps", "R", "acc_err", "pct_ex_acc_err"]
    if exposure.regret_se is not None:
        names += ["regret_se", "R_se"]
    records = []
    for name in names:
        lengths, values = exposure.defined(name)
        records += [
            {"metric": name, "L": int(L), "value": float(v)}
            for L, v in zip(lengths, values, strict=True)
        ]
    records += [{"metric": "exposure_note", "value": 1.0, "note": note} for note in exposure.notes]
    return records
