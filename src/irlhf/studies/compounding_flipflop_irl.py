"""Neural inverse-RL arms of study `compounding` in the flip-flop trap world (issue 14, item 4):
neural GAIL, AIRL and IQ-Learn beside the neural BC, DAgger and GKD arms of
`irlhf.studies.compounding_flipflop`.

Same student (`compounding_flipflop.STUDENT`: a 2 x 64 LLaMA with a 2 % acting error, in its
training roll-outs and in evaluation), same world (the `absorbing` preset, world seed
`WORLD_SEED`, the neural profile's horizon), same demonstrations (the neural BC arm's count) and
a behaviour-cloning warm start (`pretrain`) equal to the BC arm (its steps, batch and learning
rate): each method starts where BC ends and spends its own budget on top. Data seeds 0..k-1
(k = 2 for quick and default, 4 for full). Regret per L by the performance-difference estimator
(`irlhf.metrics.exposure.exposure_bias_mc`) and the learner's trap-entry and trap-exit rates
from its own roll-outs (`trap_entry_rate`, `trap_exit_rate`), as for the imitation arms.

Budgets at the default profile (H = 64, 1,024 demonstrations = 65,536 demonstration tokens, no
expert labels; optimiser steps after the 300 BC steps; roll-outs = the learner's own sequences
sampled during training, `learner_rollouts`):

  gail      8 rounds x (64 discriminator negatives + 2 PPO iterations x 32 roll-outs):
            1,024 roll-outs; 8 x 10 discriminator steps + 8 x 2 x 4 PPO epochs
  airl      the same loop with AIRL's discriminator f = g + gamma h(s') - h(s) (g = log q,
            a copy of the BC policy; `irlhf.algorithms.neural_adversarial_irl`)
  iq_learn  online, 8 rounds x 32 steps (256 optimiser steps, each 32 demonstrator + 32
            learner sequences), 8 x 64 = 512 roll-outs in the replay buffer

Measured cost of one default-profile run, one thread, CPU seconds including the BC warm start
and the evaluation (2 shared cores, data seeds 0 and 1): GAIL 20-21, AIRL 31-32 (its
discriminator is a copy of the 2 x 64 policy, GAIL's a 1 x 32 network), IQ-Learn 36-37; BC
alone 13-14. For scale, the DAgger arm rolls out
5,824 sequences and GKD samples ~4,800, both with expert labels.

What is expected. Like DAgger and GKD, these methods see their own roll-outs, so a trapped
learner's stay is in their data; unlike them, no expert says what to do there. Whether they
learn to leave a trap depends on the learned reward penalising trapped behaviour it never saw
in demonstrations. GAIL's and AIRL's discriminators are trained to tell the learner's
(prefix, token) pairs from the demonstrator's, and a trapped prefix occurs only in the learner's
roll-outs, so it gets a low reward; the trapped stays of a roll-out lower its return and the
policy step (PPO, returns over the rest of the sequence) moves mass to exit tokens, after which
the prefix looks like a demonstration again. IQ-Learn has no separate reward: its Q is the
policy's logits, and the inverse Bellman loss reaches trapped prefixes only through the value
term over the learner's own samples (online), which lowers V there but prefers no token in
particular; so it should leave traps less reliably than the adversarial methods. With a budget
this small (a few PPO iterations at a low learning rate from the BC start), all three may stay
close to BC: a regret curve near BC's, exponent well above 1, is what "not enough on-policy
correction" looks like here. And exploration is the bottleneck: a trapped roll-out finds the
single exit token only by chance (~0.3 % per trapped step from BC), so a policy step sees about
one exit per batch, where DAgger and GKD are told it at every trapped step.

Measured (default profile, data seeds 0 and 1; regret at L = 8, 16, 32, 64; exponent over L =
8..64 with its jackknife interval; trap_exit_rate per trapped step):

  BC (the warm start alone)  0.25 0.74 2.73 10.27   1.80 [1.73, 1.88]   exit 0.0030, 0.0027
  GAIL                       0.20 0.71 2.67  9.78   1.87 [1.71, 2.03]   exit 0.0026, 0.0026
  AIRL                       0.25 0.86 3.01 10.75   1.80 [1.78, 1.82]   exit 0.0032, 0.0027
  IQ-Learn                   0.20 0.71 2.67 10.29   1.89 [0.82, 2.97]   exit 0.0043, 0.0033

(seed means). None learns to leave a trap at this budget: every arm compounds like BC.
"""

from __future__ import annotations

from irlhf.algorithms.neural_adversarial_irl import NeuralAdversarialIRLConfig, NeuralGAILConfig
from irlhf.algorithms.neural_iq_learn import NeuralIQLearnConfig
from irlhf.algorithms.ppo import PPOConfig
from irlhf.kinds.common import DemoSpec
from irlhf.kinds.irl_config import IRLConfig
from irlhf.kinds.world_spec import FlipFlopWorldSpec
from irlhf.studies.compounding_flipflop import NEURAL_PROFILES, STUDENT, WORLD_SEED, neural_arms

PRESET = "absorbing"
"""The flip-flop preset of every inverse-RL run (where BC compounds)."""
SEEDS = {"quick": 2, "default": 2, "full": 4}
"""profile -> data seeds 0..k-1."""
ALGORITHMS = ("gail", "airl", "iq_learn")
ROUNDS = 8
"""Rounds of every method (each: fresh learner roll-outs, then the method's steps)."""
ROLLOUTS_PER_ROUND = 64
"""Learner sequences per round: GAIL's and AIRL's discriminator negatives, IQ-Learn's replay."""
POLICY_STEP = PPOConfig(
    iterations=2, prompts_per_iteration=32, lr=1e-4, kl_coef=0.0, whiten_advantages=False
)
"""GAIL's and AIRL's policy step per round (the methods' default: 2 PPO iterations x 32
roll-outs, 4 epochs each, unwhitened advantages, no KL penalty)."""
IQ_STEPS_PER_ROUND = 32
"""IQ-Learn's AdamW steps per round."""


def methods() -> dict[str, NeuralAdversarialIRLConfig | NeuralIQLearnConfig]:
    """algorithm -> its `[method]` table (module docstring's budgets)."""
    adversarial = {
        "rounds": ROUNDS,
        "rollouts_per_round": ROLLOUTS_PER_ROUND,
        "policy_step": POLICY_STEP,
    }
    return {
        "gail": NeuralGAILConfig(**adversarial),
        "airl": NeuralAdversarialIRLConfig(**adversarial),
        "iq_learn": NeuralIQLearnConfig(
            online=True,
            rounds=ROUNDS,
            steps_per_round=IQ_STEPS_PER_ROUND,
            rollouts_per_round=ROLLOUTS_PER_ROUND,
        ),
    }


def irl_configs(profile: str) -> list[IRLConfig]:
    """Neural GAIL, AIRL and IQ-Learn in the absorbing flip-flop world of `profile`: the BC
    arm's student, demonstrations and (as a warm start) fit; data seeds 0..SEEDS[profile]-1."""
    _, horizon, n, _, mc = NEURAL_PROFILES[profile]
    bc = neural_arms(profile)["sft"]["sft"]
    world = FlipFlopWorldSpec(preset=PRESET, horizon=horizon, seed=WORLD_SEED)
    tables = methods()
    return [
        IRLConfig(
            seed=seed,
            world=world,
            algorithm=algorithm,
            policy=STUDENT,
            demonstrations=DemoSpec(n=n),
            method=tables[algorithm],
            pretrain=bc,
            mc_samples=mc,
        )
        for algorithm in ALGORITHMS
        for seed in range(SEEDS[profile])
    ]
