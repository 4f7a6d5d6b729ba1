"""The `overoptimization` experiment kind: proxy vs gold reward along best-of-n and RL paths.

A run: world -> Demonstrations -> SFT (tabular) -> Annotator comparisons of SFT samples ->
Bradley-Terry proxy reward model -> for each n of best-of-n and each kl_coef of the exact
KL-regularised optimum, the policy's KL to SFT and its gold (true) and proxy returns relative to
SFT's (`path` records). The study `overoptimization` fits Gao et al. 2022's forms to them.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field

from irlhf.algorithms.best_of_n import best_of_n_kl, best_of_n_sample
from irlhf.algorithms.reward_model import RewardModelConfig, TabularRewardModel
from irlhf.algorithms.rlhf import kl_regularised_policy
from irlhf.algorithms.sft import SFTConfig, train_sft
from irlhf.experiments import RunContext, register_kind
from irlhf.kinds.common import FROZEN, AnnotatorSpec, DemoSpec, collect_demonstrations
from irlhf.metrics.exposure import exact_return, occupancy
from irlhf.metrics.reward import sequence_kl
from irlhf.policies.tabular import TabularPolicy
from irlhf.worlds import AutomatonSpec, AutomatonWorld
from irlhf.worlds.annotator import Annotator, sample_pairs


class OveroptimizationConfig(BaseModel):
    """Proxy vs gold reward along best-of-n and RL paths (`kind = "overoptimization"`)."""

    model_config = FROZEN
    kind: Literal["overoptimization"] = "overoptimization"
    seed: int = 0
    world: AutomatonSpec = AutomatonSpec(preset="spread")
    demonstrations: DemoSpec = DemoSpec(n=100, temperature=0.25)
    sft: SFTConfig = SFTConfig()
    annotator: AnnotatorSpec = AnnotatorSpec()
    comparisons: int = Field(100, ge=1)
    """Comparisons of SFT samples the proxy reward model is fitted on."""
    reward_model: RewardModelConfig = RewardModelConfig()
    best_of_n: list[int] = [1, 2, 4, 8, 16, 32, 64, 128, 256]
    """n values of the best-of-n path."""
    bon_samples: int = Field(400, ge=10)
    """Best-of-n sequences sampled per n to estimate its gold and proxy return."""
    kl_coefs: list[float] = [10.0, 3.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01]
    """KL coefficients of the RL path (large = close to SFT)."""
    gamma: float = Field(0.95, ge=0.0, lt=1.0)
    """Discount of the RL path's soft policy iteration."""


def _proxy_return(world: AutomatonWorld, policy: TabularPolicy, table: torch.Tensor) -> float:
    """Exact expected proxy return: occupancy-weighted reward-model table."""
    step = (policy.probs * table).sum(dim=1)  # (S,)
    return float((occupancy(world, policy, world.horizon) @ step).sum())


def run(config: OveroptimizationConfig, ctx: RunContext) -> list[dict]:
    world = AutomatonWorld(config.world)
    dynamics = world.dynamics()
    generator = torch.Generator().manual_seed(config.seed)
    demos = collect_demonstrations(config, world, generator)
    blank = TabularPolicy.uniform(world.n_states, world.vocab_size)
    sft = train_sft(blank, demos, dynamics).policy
    annotator = Annotator(world, config.annotator.beta, config.annotator.flip_prob)
    pairs = sample_pairs(dynamics, sft, config.comparisons, generator)
    reward_model = TabularRewardModel(dynamics, config.reward_model)
    ctx.log(reward_model.fit(annotator.compare(*pairs, generator), generator))

    # Metrics from here on (they read the truth).
    j_sft = exact_return(world, sft)
    proxy_sft = _proxy_return(world, sft, reward_model.table)
    records = []
    for n in config.best_of_n:
        seqs = best_of_n_sample(dynamics, sft, reward_model, n, config.bon_samples, generator)
        records.append(
            {
                "metric": "path",
                "method": "best_of_n",
                "param": float(n),
                "kl": best_of_n_kl(n),
                "gold": float(world.true_return(seqs).mean()) - j_sft,
                "proxy": float(reward_model.score(seqs).mean()) - proxy_sft,
                "value": float(n),
            }
        )
    for coef in config.kl_coefs:
        policy = kl_regularised_policy(dynamics, reward_model.table, sft, coef, config.gamma)
        records.append(
            {
                "metric": "path",
                "method": "rl",
                "param": coef,
                "kl": sequence_kl(world, policy, sft),
                "gold": exact_return(world, policy) - j_sft,
                "proxy": _proxy_return(world, policy, reward_model.table) - proxy_sft,
                "value": coef,
            }
        )
    return records


register_kind("overoptimization", OveroptimizationConfig, run)
