"""RLHF for tabular policies: a Bradley-Terry reward model, then the exact KL-regularised optimum.

Each round of iterated RLHF (Christiano et al. 2017; Ouyang et al. 2022; the V1..V5 rounds of
Llama 2, Touvron et al. 2023):

  1. sample comparison pairs from the current policy (two completions per prompt) and ask the
     `Annotator` which is better;
  2. refit the reward model on all comparisons so far (Bradley-Terry, `reward_model.py`);
  3. set the policy to the KL-regularised optimum under that reward model
     (`planning.kl_regularised_policy`),

         max_pi  E_pi[sum_t gamma^t r_phi(s_t, a_t)] - kl_coef * KL(pi || anchor),

     whose solution is pi(a|s) ∝ anchor(a|s) exp(Q(s, a) / kl_coef) with the soft Bellman
     equations Q(s, a) = r_phi(s, a) + gamma V(delta(s, a)),
     V(s) = kl_coef log sum_a anchor(a|s) exp(Q(s, a) / kl_coef)
     (Ziebart 2010; Rafailov et al. 2023, eq. 4, for the sequence-level form).

The anchor is the reference (SFT) policy every round (`anchor = "reference"`, the usual RLHF
objective, as PPO's KL penalty to the SFT model), or the previous round's policy
(`anchor = "previous"`: the policy continues from where it was, a mirror-descent / trust-region
step, so the KL to SFT can grow over rounds). With rounds = 1 this is plain RLHF.

A stationary tabular policy cannot represent the finite-horizon optimum (which depends on the
steps left), so we solve the stationary *discounted* problem with `gamma`, like the world's own
expert; gamma -> 1 approaches the undiscounted objective for long horizons.
Training code sees only the annotator and the dynamics, never the true reward or the expert.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from irlhf.algorithms.result import Trained
from irlhf.algorithms.reward_model import (
    RewardModelConfig,
    TabularRewardModel,
    concat_comparisons,
    make_reward_model,
)
from irlhf.metrics.reward import comparison_accuracy
from irlhf.planning import kl_regularised_policy
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Dynamics, NeuralPolicy, RewardModel, TabularDynamics
from irlhf.types import Comparisons, Sequences
from irlhf.worlds.annotator import Annotator, sample_pairs

if TYPE_CHECKING:
    from irlhf.algorithms.ppo import PPOConfig, ValueHead
    from irlhf.algorithms.rloo import RLOOConfig
    from irlhf.policies.causal_lm import CausalLMPolicy


class RLHFConfig(BaseModel):
    """Iterated RLHF with exact tabular policy optimisation (the `[rlhf]` table of a config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    rounds: int = Field(1, ge=1)
    """Rounds of (new comparisons, reward-model refit, policy update); 1 = plain RLHF."""
    comparisons_per_round: int = Field(300, ge=1)
    """Annotator comparisons drawn from the current policy each round."""
    kl_coef: float = Field(0.3, gt=0.0)
    """Weight of the KL penalty to the anchor (reward units per nat)."""
    gamma: float = Field(0.95, ge=0.0, lt=1.0)
    """Discount of the stationary soft policy iteration (the world's expert uses 0.95)."""
    anchor: Literal["reference", "previous"] = "reference"
    """KL to the reference (SFT) policy every round, or to the previous round's policy."""
    reward_model: RewardModelConfig = RewardModelConfig()
    """The reward model (must be tabular: the policy update needs r[s, a])."""


PolicyStep = Callable[[Any, Any, Any], Trained[Any, None]]
"""(policy, reward_model, anchor) -> the next policy and its training records: one round's
optimisation."""


def exact_policy_step(dynamics: TabularDynamics, config: RLHFConfig) -> PolicyStep:
    """The tabular step: the exact KL-regularised optimum under the reward model's table."""

    def step(
        policy: TabularPolicy, reward_model: TabularRewardModel, anchor: TabularPolicy
    ) -> Trained[TabularPolicy, None]:
        policy = kl_regularised_policy(
            dynamics, reward_model.table, anchor, config.kl_coef, config.gamma
        )
        return Trained(policy, [], None)

    return step


def rl_policy_step(
    dynamics: Dynamics,
    algorithm: str,
    rl_config: RLOOConfig | PPOConfig,
    generator: torch.Generator | None = None,
) -> PolicyStep:
    """The neural step: RLOO or PPO (the shared policy-gradient path) against the reward model,
    continuing from the current policy, with the KL penalty to a frozen copy of the anchor.

    One `generator` feeds every round's rollouts (default: a fresh one seeded 0), so rounds
    draw different samples; PPO's value head is carried from round to round (copied onto the
    new policy when the anchor is the previous policy), as the policy is."""
    from irlhf.algorithms import policy_gradient as pg
    from irlhf.algorithms.ppo import ValueHead, train_ppo
    from irlhf.algorithms.rloo import train_rloo

    if algorithm not in ("rloo", "ppo"):
        raise ValueError(f'rl algorithm must be "rloo" or "ppo" (got {algorithm!r})')
    rl_config = rl_config.model_copy(update={"max_new_tokens": dynamics.horizon})
    generator = generator or torch.Generator().manual_seed(0)
    value_heads: list[ValueHead] = []  # PPO: the last round's value head

    def score(reward_model: RewardModel) -> Callable[[Sequences], Tensor]:
        return lambda seqs: reward_model.score(seqs.to("cpu")).float()

    def value_head_for(policy: CausalLMPolicy) -> ValueHead:
        head = ValueHead(policy)
        if value_heads:
            head.linear.load_state_dict(value_heads[-1].linear.state_dict())
        value_heads[:] = [head]
        return head

    def step(
        policy: CausalLMPolicy, reward_model: RewardModel, anchor: CausalLMPolicy
    ) -> Trained[CausalLMPolicy, None]:
        reference = pg.frozen_reference(anchor)
        if policy is anchor:  # never train the anchor (the SFT policy) in place
            policy = copy.deepcopy(anchor)
        args = (policy, score(reward_model), dynamics.sample_prompts)
        if algorithm == "rloo":
            return train_rloo(*args, cast("RLOOConfig", rl_config), reference, generator=generator)
        ppo_config = cast("PPOConfig", rl_config)
        head = value_head_for(policy)
        return train_ppo(*args, ppo_config, reference, generator=generator, value_head=head)

    return step


def train_rlhf(
    reference: TabularPolicy | NeuralPolicy,
    dynamics: Dynamics,
    annotator: Annotator,
    config: RLHFConfig = RLHFConfig(),
    generator: torch.Generator | None = None,
    on_round: Callable[[int, Any, Any], None] | None = None,
    policy_step: PolicyStep | None = None,
) -> Trained[Any, Any]:
    """Iterated RLHF from `reference` (the SFT policy). Returns the policy, its records and the
    reward model (learned): one record per round with the comparisons used, the reward model's
    training metrics and its accuracy on the round's fresh comparisons *before* refitting on them
    (held out by construction, on the current policy's distribution; nan in round 1, where there
    is no model yet). `on_round(round, policy, reward_model)` sees each round's result (for
    studies that score every round, like Llama 2's V1..V5). `policy_step` optimises the policy
    each round: by default the exact tabular step; `rl_policy_step` for neural policies."""
    generator = generator or torch.Generator().manual_seed(0)
    if policy_step is None:
        if config.reward_model.kind != "tabular" or not isinstance(reference, TabularPolicy):
            raise ValueError(
                "the exact policy step needs a tabular policy and reward_model.kind = tabular; "
                "pass policy_step=rl_policy_step(...) for neural policies"
            )
        policy_step = exact_policy_step(cast(TabularDynamics, dynamics), config)
    reward_model = make_reward_model(dynamics, config.reward_model)
    policy, dataset, records = reference, [], []
    for round_ in range(1, config.rounds + 1):
        # 1. Comparisons on the current policy's own samples.
        first, second = sample_pairs(dynamics, policy, config.comparisons_per_round, generator)
        fresh: Comparisons = annotator.compare(first, second, generator)
        fresh_accuracy = comparison_accuracy(reward_model, fresh) if round_ > 1 else math.nan
        dataset.append(fresh)
        # 2. Reward model refitted on every comparison so far.
        fit_metrics = reward_model.fit(concat_comparisons(dataset), generator)
        # 3. The policy optimised against the new reward model, KL-anchored.
        anchor = reference if config.anchor == "reference" else policy
        stepped = policy_step(policy, reward_model, anchor)
        policy, step_records = stepped.policy, stepped.records
        records.append(
            {
                "round": round_,
                "annotator/comparisons": annotator.comparisons,
                "rm/fresh_accuracy": fresh_accuracy,
                **fit_metrics,
                **(step_records[-1] if step_records else {}),
            }
        )
        if on_round is not None:
            on_round(round_, policy, reward_model)
    return Trained(policy, records, reward_model)
