"""The `irl` experiment kind: a learner (tabular or neural) trained by inverse RL in an automaton
world (or the flip-flop trap world, an automaton too: `irlhf.kinds.world_spec`), scored like the
`imitation` kind (exposure metrics at every prefix length) and by the quality of the reward it
recovered.

The essay's claim: inverse RL fixes exposure bias like DAgger does -- it rolls the learner out (or
solves for its occupancy exactly) and lowers the reward of what the demonstrator does not do, so
a mistake is not followed by more mistakes -- without ever querying an expert. Being imitation,
it should approach the demonstrator but not beat it. The tabular methods (exact policy steps):

  maxent_irl  MaxEnt IRL (Ziebart et al. 2008): feature-count matching, soft-optimal learner;
  gail        GAIL (Ho & Ermon 2016): discriminator reward, the RLHF policy step;
  airl        AIRL (Fu et al. 2018): discriminator f = g + gamma h(s') - h(s), reward g;
  iq_learn    IQ-Learn (Garg et al. 2021; Wulfmeier et al. 2024): the policy's logits are Q.

Neural learners (`policy.kind = "causal_lm"`, a tiny transformer that sees tokens only) are trained
by the neural GAIL, AIRL and IQ-Learn (`irlhf.kinds.irl_neural`, with an optional
behaviour-cloning warm start `pretrain`) and scored by Monte Carlo like the neural `imitation`
kind; MaxEnt IRL is tabular only. The `[method]` table configures the chosen method
(`irlhf.kinds.irl_config`).

A tabular run: world -> Demonstrations -> method -> (policy, recovered reward) -> the `imitation`
kind's exposure records (regret, eps, R, AccErr, %ExAccErr per L), the exact returns of the learner,
the demonstrator and the expert, and the recovered-reward metrics of
`irlhf.metrics.recovered_reward`: the correlation of its soft advantages with the true ones on
demonstrator states (`irl/adv_corr_demo`) and off them (`irl/adv_corr_off`), and reward transfer
(`irl/transfer_return`: the exact true return of the soft-optimal policy for the recovered reward,
solved from scratch). Both are solved at the method's own temperature (`irl/reward_temperature`:
MaxEnt's and IQ-Learn's alpha, GAIL's and AIRL's kl_coef), since a recovered reward's scale is
tied to the temperature it was learned at (only reward / temperature is identified).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from irlhf.algorithms.adversarial_irl import AdversarialIRLConfig, train_airl, train_gail
from irlhf.algorithms.iq_learn import train_iq_learn
from irlhf.algorithms.maxent_irl import train_maxent_irl
from irlhf.algorithms.result import Trained
from irlhf.experiments import RunContext, register_kind
from irlhf.kinds import irl_neural
from irlhf.kinds.common import collect_demonstrations, exposure_records, log_training
from irlhf.kinds.irl_config import IRLConfig, feedback_of, irl_world
from irlhf.metrics.exposure import exact_return, exposure_bias
from irlhf.metrics.recovered_reward import advantage_correlation, reward_transfer
from irlhf.metrics.undefined import UndefinedMetricWarning
from irlhf.policies.tabular import TabularPolicy
from irlhf.worlds import AutomatonWorld

Trainer = Callable[..., Trained[TabularPolicy, Tensor]]


@dataclass(frozen=True)
class IRLMethod:
    """How to train one IRL method and read its config."""

    train: Trainer
    """(policy, demos, dynamics, config, generator) -> the policy, its records and the recovered
    reward table (learned)."""
    temperature: Callable[[Any], float]
    """config -> the temperature its recovered reward is solved at (reward units per nat)."""
    rollouts: Callable[[Any], int]
    """config -> learner sequences sampled during training (0 = exact or offline)."""


def _adversarial_rollouts(config: AdversarialIRLConfig) -> int:
    return config.rounds * config.rollouts_per_round


METHODS: dict[str, IRLMethod] = {
    "maxent_irl": IRLMethod(train_maxent_irl, lambda c: c.alpha, lambda c: 0),
    "gail": IRLMethod(train_gail, lambda c: c.kl_coef, _adversarial_rollouts),
    "airl": IRLMethod(train_airl, lambda c: c.kl_coef, _adversarial_rollouts),
    "iq_learn": IRLMethod(
        train_iq_learn,
        lambda c: c.alpha,
        lambda c: c.rounds * c.rollouts_per_round if c.online else 0,
    ),
}


def train(
    config: IRLConfig, world: AutomatonWorld, ctx: RunContext | None = None
) -> tuple[TabularPolicy, Tensor, dict[str, float]]:
    """Demonstrations -> the IRL method. Returns (policy, recovered reward [S, V], feedback)."""
    generator = torch.Generator().manual_seed(config.seed)
    demos = collect_demonstrations(config, world, generator)
    blank = TabularPolicy.uniform(world.n_states, world.vocab_size)
    method = METHODS[config.algorithm]
    trained = method.train(blank, demos, world.dynamics(), config.method, generator)
    if ctx is not None:
        log_training(ctx, trained.records)
    return trained.policy, trained.learned, feedback_of(demos, method.rollouts(config.method))


def recovered_reward_records(
    config: IRLConfig, world: AutomatonWorld, reward: Tensor
) -> list[dict]:
    """Advantage correlations on and off the demonstrator's states and reward transfer, at the
    method's own temperature and discount (metric-side: reads the truth)."""
    temperature = METHODS[config.algorithm].temperature(config.method)
    gamma = config.method.gamma
    d = config.demonstrations
    demonstrator = world.demonstrator(d.temperature, d.epsilon)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        correlations = advantage_correlation(world, reward, demonstrator, temperature, gamma)
    metrics: dict[str, float] = {
        **correlations,
        "irl/transfer_return": reward_transfer(world, reward, temperature, gamma),
        "irl/reward_temperature": temperature,
    }
    # an undefined correlation (constant advantages) is a note record, not a nan value
    notes = [str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)]
    return [
        {"metric": name, "value": float(value)}
        for name, value in metrics.items()
        if not math.isnan(value)
    ] + [{"metric": "irl/undefined_note", "value": 1.0, "note": note} for note in notes]


def run(config: IRLConfig, ctx: RunContext) -> list[dict]:
    if config.neural:
        return irl_neural.run(config, ctx)
    world = irl_world(config)
    started = time.perf_counter()
    policy, reward, feedback = train(config, world, ctx)
    train_seconds = time.perf_counter() - started
    d = config.demonstrations
    records = exposure_records(exposure_bias(world, policy))
    records += [
        {"metric": "j_model", "value": exact_return(world, policy)},
        {"metric": "j_expert", "value": exact_return(world, world.expert)},
        {
            "metric": "j_demonstrator",
            "value": exact_return(world, world.demonstrator(d.temperature, d.epsilon)),
        },
        {"metric": "train_seconds", "value": train_seconds},
        *({"metric": k, "value": v} for k, v in feedback.items()),
    ]
    return records + recovered_reward_records(config, world, reward)


# version 2: an undefined advantage correlation is a note record (was a nan value)
# version 3: one `[method]` table, the chosen method's (was all seven method tables, hashed into
# every run id); the numbers of a run are unchanged, its id is new
# not bumped when a neural learner's trap records moved onto its exposure roll-outs (a second,
# equally valid sample of the same rates): a bump would re-key every tabular run too
register_kind("irl", IRLConfig, run, version=3)
