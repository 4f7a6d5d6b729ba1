"""Shared by the tabular imitation and IRL tests: the blank (uniform) learner, and one seed of
the "learner beats uniform, its reward ranks demonstrator tokens" measurement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from irlhf.algorithms.result import Trained
from irlhf.metrics.exposure import exact_return
from irlhf.metrics.recovered_reward import advantage_correlation
from irlhf.policies import TabularPolicy
from irlhf.worlds import Demonstrations, make_world
from irlhf.worlds.automaton import AutomatonWorld


def blank(world: AutomatonWorld) -> TabularPolicy:
    return TabularPolicy.uniform(world.n_states, world.vocab_size)


def spread_outcome(
    train: Callable[..., Trained[TabularPolicy, torch.Tensor]],
    config: Any,
    seed: int,
    alpha: float,
) -> tuple[float, float, list[dict]]:
    """`train(blank, demos, dynamics, config, generator)` on 50 demonstrations of the spread world
    (horizon 16, world and generators seeded `seed`). Returns the normalised score
    (J - J_uniform) / (J_expert - J_uniform), the recovered reward's advantage correlation on
    demonstrator states (solved at `alpha`) and the training records."""
    world = make_world("spread", seed=seed, horizon=16)
    demos = Demonstrations.collect(world, 50, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    trained = train(blank(world), demos, world.dynamics(), config, g)
    j_uniform, j_expert = exact_return(world, blank(world)), exact_return(world, world.expert)
    score = (exact_return(world, trained.policy) - j_uniform) / (j_expert - j_uniform)
    corr = advantage_correlation(world, trained.learned, world.expert, alpha=alpha)
    return score, corr["irl/adv_corr_demo"], trained.records
