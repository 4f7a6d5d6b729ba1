"""The `rlhf` experiment kind: SFT on demonstrations, then (iterated) RLHF from the SFT policy.

A run: world -> Demonstrations -> SFT (tabular) -> Annotator comparisons on the current policy's
samples -> Bradley-Terry reward model -> exact KL-regularised policy, for `rlhf.rounds` rounds.
Every policy along the way (a base policy trained on generic unrewarded data, SFT, each RLHF
round) is scored exactly (true return J, KL to SFT) and, when `return_samples > 0`, by a sample of
its true-return distribution (the Llama 2 Figure 20 analogue). The reward model is scored against
the true ranking on held-out pairs from the SFT policy and from the final policy.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from irlhf.algorithms.rlhf import RLHFConfig, train_rlhf
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.experiments import RunContext, register_kind
from irlhf.metrics.exposure import exact_return, optimal_return
from irlhf.metrics.reward import sequence_kl
from irlhf.policies.tabular import TabularPolicy
from irlhf.studies.imitation import DemoSpec
from irlhf.worlds import AutomatonSpec, AutomatonWorld, Demonstrations
from irlhf.worlds.annotator import Annotator, sample_pairs

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class AnnotatorSpec(BaseModel):
    """The human stand-in: Bradley-Terry on the true return, plus label flips."""

    model_config = _FROZEN
    beta: float = Field(1.0, ge=0.0)
    """Rationality (per reward unit); 0 = coin flips."""
    flip_prob: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a label is flipped (label noise)."""


class RLHFRunConfig(BaseModel):
    """One RLHF run (`kind = "rlhf"`), tabular policies."""

    model_config = _FROZEN
    kind: Literal["rlhf"] = "rlhf"
    seed: int = 0
    """Seed of demonstrations, comparisons and evaluation samples."""
    world: AutomatonSpec = AutomatonSpec(preset="spread")
    """The automaton world (`preset = "spread"`: reward spread, room to beat the demos)."""
    demonstrations: DemoSpec = DemoSpec(n=100)
    sft: SFTConfig = SFTConfig()
    annotator: AnnotatorSpec = AnnotatorSpec()
    rlhf: RLHFConfig = RLHFConfig()
    """Rounds, comparisons per round, KL coefficient, reward model."""
    base_sequences: int = Field(100, ge=1)
    """Sequences of generic, unrewarded data (uniform tokens) the base policy is trained on."""
    return_samples: int = Field(0, ge=0)
    """Sequences sampled per model to record its true-return distribution (0 = none)."""
    heldout_pairs: int = Field(1000, ge=10)
    """Held-out pairs per policy for the reward model's ranking accuracy."""


def ranking_accuracy(world, reward_model, policy, n: int, generator: torch.Generator) -> float:
    """Fraction of held-out pairs of `policy`'s samples that the reward model orders like the
    true return (pairs with equal true return skipped). Metric-side: reads the truth."""
    first, second = sample_pairs(world.dynamics(), policy, n, generator)
    true = world.true_return(first) - world.true_return(second)
    predicted = reward_model.score(first) - reward_model.score(second)
    decided = true != 0
    return float(((true > 0) == (predicted > 0))[decided].double().mean())


def _return_sample_records(world, name: str, policy, n: int, generator) -> list[dict]:
    seqs = world.rollout(policy, n, generator)
    return [
        {"metric": "return_sample", "model": name, "i": i, "value": float(r)}
        for i, r in enumerate(world.true_return(seqs).tolist())
    ]


def run(config: RLHFRunConfig, ctx: RunContext) -> list[dict]:
    world = AutomatonWorld(config.world)
    dynamics = world.dynamics()
    generator = torch.Generator().manual_seed(config.seed)
    blank = TabularPolicy.uniform(world.n_states, world.vocab_size)
    d = config.demonstrations
    demos = Demonstrations.collect(world, d.n, generator, d.temperature, d.epsilon)
    sft, _ = train_sft(blank, demos, dynamics, config.sft)
    generic = Demonstrations.collect(world, config.base_sequences, generator, epsilon=1.0)
    base, _ = train_sft(blank, generic, dynamics, config.sft)

    annotator = Annotator(world, config.annotator.beta, config.annotator.flip_prob)
    models: dict[str, TabularPolicy] = {"base": base, "sft": sft}
    policy, records, reward_model = train_rlhf(
        sft,
        dynamics,
        annotator,
        config.rlhf,
        generator,
        on_round=lambda round_, p, _rm: models.__setitem__(f"rlhf_{round_}", p),
    )
    for record in records:
        ctx.log(record)

    # Evaluation (reads the truth; its own generator so training randomness is untouched).
    evaluation = torch.Generator().manual_seed(config.seed + 10_000)
    demonstrator = world.demonstrator(d.temperature, d.epsilon)
    out = [
        {"metric": "j_demonstrator", "value": exact_return(world, demonstrator)},
        {"metric": "j_expert", "value": exact_return(world, world.expert)},
        {"metric": "j_optimal", "value": optimal_return(world)},
        {"metric": "comparisons", "value": float(annotator.comparisons)},
        {
            "metric": "rm_accuracy",
            "value": ranking_accuracy(world, reward_model, sft, config.heldout_pairs, evaluation),
        },
        {
            "metric": "rm_accuracy_final",
            "value": ranking_accuracy(
                world, reward_model, policy, config.heldout_pairs, evaluation
            ),
        },
    ]
    for name, model in models.items():
        out.append({"metric": "j", "model": name, "value": exact_return(world, model)})
        out.append({"metric": "kl_to_sft", "model": name, "value": sequence_kl(world, model, sft)})
        if config.return_samples:
            out += _return_sample_records(world, name, model, config.return_samples, evaluation)
    return out


register_kind("rlhf", RLHFRunConfig, run)
