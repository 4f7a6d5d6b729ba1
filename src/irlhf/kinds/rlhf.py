"""The `rlhf` experiment kind: SFT on demonstrations, then (iterated) RLHF from the SFT policy.

A run: world -> Demonstrations -> SFT (tabular) -> Annotator comparisons on the current policy's
samples -> Bradley-Terry reward model -> exact KL-regularised policy, for `rlhf.rounds` rounds.
Every policy along the way (a base policy trained on generic unrewarded data, SFT, each RLHF
round) is scored exactly (true return J, KL to SFT) and, when `return_samples > 0`, by a sample of
its true-return distribution (the Llama 2 Figure 20 analogue). The reward model is scored against
the true ranking on held-out pairs from the SFT policy and from the final policy.

In the neural oracle world (`world.kind = "oracle"`, `irlhf.kinds.world_spec`) the policy is a
causal LM, the annotator is Bradley-Terry on the gold reward model, the reward model is a neural
Bradley-Terry model and each round's policy step is RLOO or PPO; every J (SFT, RLHF rounds, the
demonstrator, the expert) is a Monte-Carlo estimate, and there is no base policy and no exact
optimum (`j_optimal` is not recorded).

A causal LM also learns in the automaton worlds (the flip-flop world of `irlhf.worlds.flipflop`
is one a transformer can read): it sees tokens only, its J is a Monte-Carlo mean, and the exact
references (demonstrator, expert, optimum) stay exact. There `arms` adds the other preference
paradigms, each from the same SFT policy at the RLHF arm's comparison budget (one round):
the other RL algorithm against the same reward model, DPO (Rafailov et al. 2023) and SFT on the
preferred sequences (both on `comparisons_per_round` fresh comparisons of SFT samples, counted
by their own annotator), best-of-n against the reward model, and SFT from scratch on as many
extra demonstrations as the comparisons showed sequences (`sft_equal`). Every model then
records its budget: demonstration tokens, annotator comparisons and the policy's optimiser steps
(`irlhf.studies.budgets`). Training code sees the annotator's labels, never the true reward.
"""

from __future__ import annotations

import copy
import math
from typing import Literal, cast

import torch
from pydantic import BaseModel, Field, model_validator

from irlhf.algorithms.best_of_n import best_of_n_kl, best_of_n_sample
from irlhf.algorithms.dpo import DPOConfig, train_dpo
from irlhf.algorithms.policy_gradient import PolicyGradientConfig
from irlhf.algorithms.ppo import PPOConfig
from irlhf.algorithms.rlhf import RLHFConfig, rl_policy_step, train_rlhf
from irlhf.algorithms.rloo import RLOOConfig
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.experiments import RunContext, register_kind
from irlhf.kinds.common import (
    FROZEN,
    AnnotatorSpec,
    DemoSpec,
    PolicySpec,
    build_policy,
    check_neural_world,
    collect_demonstrations,
    mc_return,
)
from irlhf.kinds.world_spec import WorldSpec, is_neural, make_world, world_name
from irlhf.metrics.exposure import exact_return, optimal_return
from irlhf.metrics.reward import sequence_kl
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy, RewardModel, World
from irlhf.types import Sequences
from irlhf.worlds import AutomatonSpec, AutomatonWorld, Demonstrations, rollout
from irlhf.worlds.annotator import Annotator, sample_pairs
from irlhf.worlds.oracle import LMWorld

Arm = Literal["rloo", "ppo", "dpo", "best_of_n", "sft_preferred", "sft_equal"]
"""An extra arm of a neural run (`RLHFRunConfig.arms`)."""


class RLHFRunConfig(BaseModel):
    """One RLHF run (`kind = "rlhf"`): tabular policies, or neural ones in the oracle world."""

    model_config = FROZEN
    kind: Literal["rlhf"] = "rlhf"
    seed: int = 0
    """Seed of demonstrations, comparisons and evaluation samples."""
    world: WorldSpec = AutomatonSpec(preset="spread")
    """The automaton world (`preset = "spread"`: reward spread, room to beat the demos), or the
    neural oracle world (`kind = "oracle"`; neural policy and reward model)."""
    demonstrations: DemoSpec = DemoSpec(n=100)
    sft: SFTConfig = SFTConfig()
    annotator: AnnotatorSpec = AnnotatorSpec()
    rlhf: RLHFConfig = RLHFConfig()
    """Rounds, comparisons per round, KL coefficient, reward model."""
    policy: PolicySpec = PolicySpec()
    """Tabular (exact policy step) or a tiny causal LM (RLOO / PPO policy step)."""
    rl: Literal["rloo", "ppo"] = "rloo"
    """Neural: the policy-gradient algorithm of each round."""
    rloo: RLOOConfig = RLOOConfig()
    """Neural RLOO settings (its kl_coef is the KL penalty to the anchor)."""
    ppo: PPOConfig = PPOConfig()
    """Neural PPO settings."""
    eval_samples: int = Field(512, ge=2)
    """Neural: sequences sampled per model for its Monte-Carlo true return and KL to SFT."""
    base_sequences: int = Field(100, ge=1)
    """Sequences of generic, unrewarded data (uniform tokens) the base policy is trained on."""
    return_samples: int = Field(0, ge=0)
    """Sequences sampled per model to record its true-return distribution (0 = none)."""
    heldout_pairs: int = Field(1000, ge=10)
    """Held-out pairs per policy for the reward model's ranking accuracy."""
    arms: tuple[Arm, ...] = ()
    """Neural, one round: extra policies from the SFT policy, each at the RLHF arm's comparison
    budget (module docstring): "rloo" or "ppo" (the one `rl` is not), "dpo", "best_of_n",
    "sft_preferred", "sft_equal". Scored like the RLHF rounds, under their own names."""
    dpo: DPOConfig = DPOConfig(steps=100, batch_size=32, lr=1e-4, max_grad_norm=1.0)
    """The "dpo" arm's settings (its steps also bound "sft_preferred")."""
    best_of_n: int = Field(4, ge=1)
    """The "best_of_n" arm's n: SFT samples per prompt, the reward model's favourite kept."""

    @model_validator(mode="after")
    def _neural_world_needs_neural_models(self) -> RLHFRunConfig:
        check_neural_world(self)
        if world_name(self.world) == "text":
            raise ValueError(
                'world.kind "text" is not supported by the rlhf kind (its prompts do not fit '
                "the fresh reward model's context); use the automaton or the oracle world"
            )
        if self.arms and (self.policy.kind != "causal_lm" or self.rlhf.rounds != 1):
            raise ValueError('arms need policy.kind = "causal_lm" and rlhf.rounds = 1')
        if self.rl in self.arms:
            raise ValueError(f'arms: "{self.rl}" is the run\'s own rl (recorded as rlhf_1)')
        if is_neural(self.world) and self.rlhf.reward_model.kind != "neural":
            raise ValueError(
                f'rlhf.reward_model.kind must be "neural" in the {world_name(self.world)} world '
                "(a table needs the automaton's latent states)"
            )
        return self


def ranking_accuracy(
    world: World,
    reward_model: RewardModel,
    policy: TabularPolicy | Policy,
    n: int,
    generator: torch.Generator,
) -> float:
    """Fraction of held-out pairs of `policy`'s samples that the reward model orders like the
    true return (pairs with equal true return skipped). Metric-side: reads the truth."""
    first, second = sample_pairs(world.dynamics(), policy, n, generator)
    true = world.true_return(first) - world.true_return(second)
    predicted = reward_model.score(first) - reward_model.score(second)
    decided = true != 0
    return float(((true > 0) == (predicted > 0))[decided].double().mean())


def _return_sample_records(name: str, returns: torch.Tensor) -> list[dict]:
    return [
        {"metric": "return_sample", "model": name, "i": i, "value": float(r)}
        for i, r in enumerate(returns.tolist())
    ]


class _Scorer:
    """Scores each model as it appears (iterated RLHF trains neural policies in place, so a
    round's policy is evaluated before the next round changes it). Reads the truth."""

    def __init__(self, world, sft, config: RLHFRunConfig, generator: torch.Generator) -> None:
        self.world, self.sft, self.config, self.generator = world, sft, config, generator
        self.records: list[dict] = []

    def __call__(self, name: str, policy) -> None:
        world, config = self.world, self.config
        if isinstance(policy, TabularPolicy):
            j = exact_return(world, policy)
            tabular_sft = isinstance(self.sft, TabularPolicy)
            kl = sequence_kl(world, policy, self.sft) if tabular_sft else float("nan")
            self.records.append({"metric": "j", "model": name, "value": j})
            samples = config.return_samples
            if samples:
                returns = world.true_return(world.rollout(policy, samples, self.generator))
                self.records += _return_sample_records(name, returns)
        else:
            n = max(config.eval_samples, config.return_samples)
            seqs = rollout(world, policy, n, self.generator)
            returns = world.true_return(seqs)
            with torch.inference_mode():
                log_ratio = policy.log_probs(seqs.to(policy.device)) - self.sft.log_probs(
                    seqs.to(self.sft.device)
                )
            kl = float(log_ratio.sum(dim=1).mean())
            self.samples(name, returns, kl)
            return
        self.records.append({"metric": "kl_to_sft", "model": name, "value": kl})

    def samples(self, name: str, returns: torch.Tensor, kl: float) -> None:
        """Records of a model known by the true returns [N] of its samples and its KL to SFT."""
        se = float(returns.std() / len(returns) ** 0.5)
        self.records.append({"metric": "j", "model": name, "value": float(returns.mean())})
        self.records.append({"metric": "j_se", "model": name, "value": se})
        if self.config.return_samples:
            self.records += _return_sample_records(name, returns[: self.config.return_samples])
        self.records.append({"metric": "kl_to_sft", "model": name, "value": kl})


def run(config: RLHFRunConfig, ctx: RunContext) -> list[dict]:
    world = make_world(config.world)
    dynamics = world.dynamics()
    generator = torch.Generator().manual_seed(config.seed)
    neural = config.policy.kind != "tabular"
    demos = collect_demonstrations(config, world, generator)
    blank = build_policy(config, world)
    trained_sft = train_sft(blank, demos, dynamics, config.sft, generator)
    sft, sft_records = trained_sft.policy, trained_sft.records
    for record in sft_records[:: max(1, len(sft_records) // 50)]:
        ctx.log({"phase": "sft", **record})
    evaluation = torch.Generator().manual_seed(config.seed + 10_000)
    score = _Scorer(world, sft, config, evaluation)
    if isinstance(
        world, AutomatonWorld
    ):  # a neural world has no cheap "generic data" model: no base policy there
        generic = Demonstrations.collect(world, config.base_sequences, generator, epsilon=1.0)
        blank_table = TabularPolicy.uniform(world.n_states, world.vocab_size)
        score("base", train_sft(blank_table, generic, dynamics).policy)
    score("sft", sft)
    annotator = Annotator(world, config.annotator.beta, config.annotator.flip_prob)
    step = None
    if neural:
        rl_config = config.rloo if config.rl == "rloo" else config.ppo
        # the run's own rollout generator, so that seeds are independent
        rollouts = torch.Generator().manual_seed(config.seed + 20_000)
        step = rl_policy_step(dynamics, config.rl, rl_config, rollouts)
    rlhf = train_rlhf(
        sft,
        dynamics,
        annotator,
        config.rlhf,
        generator,
        on_round=lambda round_, p, _rm: score(f"rlhf_{round_}", p),
        policy_step=step,
    )
    policy, reward_model = rlhf.policy, rlhf.learned
    for record in rlhf.records:
        ctx.log({"phase": "rlhf", **record})

    d = config.demonstrations
    demonstrator = world.demonstrator(d.temperature, d.epsilon)
    heldout = config.heldout_pairs
    if isinstance(world, AutomatonWorld):
        references = [
            {
                "metric": "j_demonstrator",
                "value": exact_return(world, cast(TabularPolicy, demonstrator)),
            },
            {"metric": "j_expert", "value": exact_return(world, world.expert)},
            {"metric": "j_optimal", "value": optimal_return(world)},
        ]
    else:
        n = config.eval_samples
        references = [
            {"metric": f"j_{name}", "value": mc_return(world, source, n, evaluation)[0]}
            for name, source in (("demonstrator", demonstrator), ("expert", world.demonstrator()))
        ]
    arm_budgets = (
        _arm_records(config, world, demos, sft, reward_model, score) if config.arms else []
    )
    return [
        *score.records,
        *references,
        {"metric": "comparisons", "value": float(annotator.comparisons)},
        {
            "metric": "rm_accuracy",
            "value": ranking_accuracy(world, reward_model, sft, heldout, evaluation),
        },
        {
            "metric": "rm_accuracy_final",
            "value": ranking_accuracy(world, reward_model, policy, heldout, evaluation),
        },
        *arm_budgets,
    ]


def policy_steps(config: PolicyGradientConfig) -> int:
    """Optimiser steps of an RLOO or PPO run (at most: PPO's target_kl may stop epochs early)."""
    batch = config.prompts_per_iteration * config.samples_per_prompt
    per_epoch = 1 if config.minibatch_size is None else math.ceil(batch / config.minibatch_size)
    return config.iterations * config.epochs * per_epoch


def _arm_records(
    config: RLHFRunConfig,
    world: AutomatonWorld | LMWorld,
    demos: Demonstrations,
    sft,
    reward_model: RewardModel,
    score: _Scorer,
) -> list[dict]:
    """Train each of `config.arms` from `sft` and score it (into `score.records`); returns every
    model's budget records. The arms draw from their own generator, so the RLHF arm's numbers
    are those of the same config without arms."""
    dynamics = world.dynamics()
    generator = torch.Generator().manual_seed(config.seed + 30_000)
    n, d, sft_steps = config.rlhf.comparisons_per_round, config.demonstrations, config.sft.steps
    rl_configs: dict[str, RLOOConfig | PPOConfig] = {"rloo": config.rloo, "ppo": config.ppo}
    rl_steps = policy_steps(rl_configs[config.rl])
    # (demonstration tokens, annotator comparisons, policy optimiser steps) of each model
    spent = {"sft": (demos.n_tokens, 0, sft_steps), "rlhf_1": (demos.n_tokens, n, sft_steps +
             rl_steps)}  # fmt: skip
    comparisons = None
    if {"dpo", "sft_preferred"} & set(config.arms):  # one fresh set, its own annotator's count
        annotator = Annotator(world, config.annotator.beta, config.annotator.flip_prob)
        comparisons = annotator.compare(*sample_pairs(dynamics, sft, n, generator), generator)
    for arm in config.arms:
        tokens, steps = demos.n_tokens, sft_steps
        if arm in ("rloo", "ppo"):
            step = rl_policy_step(dynamics, arm, rl_configs[arm], generator)
            score(arm, step(sft, reward_model, sft).policy)
            steps += policy_steps(rl_configs[arm])
        elif arm == "dpo":
            assert comparisons is not None
            dpo = train_dpo(copy.deepcopy(sft), sft, comparisons, dynamics, config.dpo, generator)
            score(arm, dpo.policy)
            steps += config.dpo.steps
        elif arm == "sft_preferred":  # the chosen sequences as demonstrations (SFT samples, T=1)
            assert comparisons is not None
            preferred = Demonstrations(comparisons.chosen, 1.0, 0.0)
            more = config.sft.model_copy(update={"steps": config.dpo.steps})
            score(arm, train_sft(copy.deepcopy(sft), preferred, dynamics, more, generator).policy)
            steps += config.dpo.steps
        elif arm == "best_of_n":
            bon = config.best_of_n
            seqs = best_of_n_sample(
                dynamics, sft, reward_model, bon, config.eval_samples, generator
            )
            score.samples(arm, world.true_return(seqs), best_of_n_kl(bon))
        else:  # sft_equal: SFT from scratch, 2 extra demonstrations per comparison (its pair)
            extra = Demonstrations.collect(world, 2 * n, generator, d.temperature, d.epsilon)
            both = Demonstrations(
                Sequences.concat([demos.sequences, extra.sequences]), d.temperature, d.epsilon
            )
            more = config.sft.model_copy(update={"steps": sft_steps + rl_steps})
            score(
                arm, train_sft(build_policy(config, world), both, dynamics, more, generator).policy
            )
            tokens, steps = both.n_tokens, sft_steps + rl_steps
        spent[arm] = (tokens, 0 if arm == "sft_equal" else n, steps)
    keys = ("demo_tokens", "annotator_comparisons", "optimizer_steps")
    return [
        {"metric": key, "model": model, "value": float(value)}
        for model, values in spent.items()
        for key, value in zip(keys, values, strict=True)
    ]


# version 2: neural RL rounds draw from the run's own generator (they replayed seed 0's
# draws) and PPO keeps its value head across rounds
register_kind("rlhf", RLHFRunConfig, run, version=2)
