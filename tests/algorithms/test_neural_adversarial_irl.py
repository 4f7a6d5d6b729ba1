"""Neural GAIL and AIRL: the token discriminator's logits by hand and against an independent
forward pass, causality, and the learner learning in the tiny automaton world (exact returns by
enumeration, several seeds)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from neural_irl_helpers import enumerated_return, tiny_learner

from irlhf.algorithms import policy_gradient as pg
from irlhf.algorithms.neural_adversarial_irl import (
    NeuralAdversarialIRLConfig,
    NeuralGAILConfig,
    TokenDiscriminator,
    shaped_reward,
    train_neural_airl,
    train_neural_gail,
)
from irlhf.algorithms.ppo import PPOConfig
from irlhf.metrics.exposure import exact_return
from irlhf.types import Sequences
from irlhf.worlds import Demonstrations, make_world


def test_shaped_reward_by_hand() -> None:
    """f_t = g_t + gamma h(s_{t+1}) - h(s_t), potentials of the C + 1 prefixes s_0 .. s_C."""
    g = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    potentials = torch.tensor([[0.5, 1.0, -1.0], [0.0, 0.0, 2.0]])
    expected = torch.tensor([[1.0 + 0.9 * 1.0 - 0.5, 2.0 + 0.9 * -1.0 - 1.0], [0.0, -1.0 + 1.8]])
    torch.testing.assert_close(shaped_reward(g, potentials, 0.9), expected)
    with pytest.raises(ValueError, match=r"potentials must be \[2, 3\]"):
        shaped_reward(g, potentials[:, :2], 0.9)


def _discriminator(kind: str = "airl", gamma: float = 0.9) -> tuple[TokenDiscriminator, Sequences]:
    world = make_world("spread", horizon=5)
    config = NeuralAdversarialIRLConfig(
        disc_init="random", normalized_g=False, disc_width=16, disc_heads=2, gamma=gamma
    )
    disc = TokenDiscriminator.build(world.dynamics(), 6, config, kind, seed=0)
    torch.nn.init.normal_(disc.potential.linear.weight, std=0.5)  # a non-trivial h
    torch.nn.init.constant_(disc.potential.linear.bias, 0.3)
    g = torch.Generator().manual_seed(1)
    seqs = world.rollout(world.expert, 3, g)  # (3, 6): one prompt token, 5 completion tokens
    return disc, seqs


def test_discriminator_logits_match_an_independent_forward() -> None:
    """g at position t is the network's logit of token t after tokens_<t, and h(prefix) is the
    potential head on the Hugging Face forward's last hidden state at the prefix's last token."""
    disc, seqs = _discriminator(gamma=0.9)
    with torch.no_grad():
        g, f = disc.g_and_f(seqs)
        out = disc.model(input_ids=seqs.tokens, output_hidden_states=True)
        logits = out.logits[..., : disc.network.action_vocab_size]  # (B, T, A), predicts t + 1
        h = disc.potential(out.hidden_states[-1])  # (B, T): h of the prefix tokens_<=t
    assert g.shape == f.shape == seqs.tokens.shape
    assert (g[:, 0] == 0).all() and (f[:, 0] == 0).all()  # the prompt is not scored
    for t in range(1, seqs.length):
        token = seqs.tokens[:, t]
        expected_g = logits[:, t - 1].gather(1, token[:, None]).squeeze(1)
        torch.testing.assert_close(g[:, t], expected_g, atol=1e-5, rtol=1e-5)
        expected_f = expected_g + 0.9 * h[:, t] - h[:, t - 1]
        torch.testing.assert_close(f[:, t], expected_f, atol=1e-5, rtol=1e-5)


def test_discriminator_is_causal() -> None:
    """Changing the last token changes the scores of that token only."""
    disc, seqs = _discriminator()
    tokens = seqs.tokens.clone()
    tokens[:, -1] = (tokens[:, -1] + 1) % disc.network.action_vocab_size
    changed = Sequences(tokens, seqs.prompt_mask, seqs.completion_mask)
    with torch.no_grad():
        g, f = disc.g_and_f(seqs)
        g2, f2 = disc.g_and_f(changed)
    torch.testing.assert_close(g[:, :-1], g2[:, :-1])
    torch.testing.assert_close(f[:, :-1], f2[:, :-1])
    assert not torch.allclose(g[:, -1], g2[:, -1])


def test_airl_logit_is_f_minus_log_pi_and_gail_rewards_are_softplus_or_logit() -> None:
    disc, seqs = _discriminator("airl")
    log_pi = -torch.rand(seqs.tokens.shape, generator=torch.Generator().manual_seed(0))
    mask = seqs.completion_mask
    with torch.no_grad():
        g, f = disc.g_and_f(seqs)
        torch.testing.assert_close(disc.logits(seqs, log_pi), (f - log_pi) * mask)
        torch.testing.assert_close(disc.policy_reward(seqs, log_pi), (f - log_pi) * mask)
        torch.testing.assert_close(disc.recovered_reward(seqs), g)  # AIRL recovers g
        with pytest.raises(ValueError, match="log_pi"):
            disc.logits(seqs)
        disc.kind, disc.reward = "gail", "softplus"
        torch.testing.assert_close(disc.logits(seqs), g)  # GAIL: no shaping, no log pi
        torch.testing.assert_close(disc.policy_reward(seqs), F.softplus(g) * mask)
        disc.reward = "logit"
        torch.testing.assert_close(disc.policy_reward(seqs), g)


def test_a_normalized_airl_discriminator_copied_from_the_policy_starts_at_one_half() -> None:
    """disc_init = "policy", normalized_g: g = log pi_start and h = 0, so f - log pi_start = 0
    (D = 1/2) on any sequence; the copy trains apart from the policy."""
    world = make_world("spread", horizon=5)
    policy = tiny_learner(world, seed=0)
    config = NeuralAdversarialIRLConfig(disc_init="policy", normalized_g=True)
    disc = TokenDiscriminator.build(world.dynamics(), 6, config, "airl", seed=0, policy=policy)
    seqs = world.rollout(world.expert, 3, torch.Generator().manual_seed(2))
    with torch.no_grad():
        log_pi = pg.forward(policy, seqs)[0]
        g, _ = disc.g_and_f(seqs)
        torch.testing.assert_close(g, log_pi, atol=1e-5, rtol=1e-5)
        assert disc.logits(seqs, log_pi).abs().max() < 1e-5
    assert all(p.requires_grad for p in disc.parameters())
    assert not any(p is q for p in disc.parameters() for q in policy.parameters())


SEEDS = range(4)
# From a blank network: larger, whitened PPO steps than the defaults (which are sized for a BC
# start); with the defaults 10 rounds reach only J ~ -1.3 here (GAIL, measured).
BLANK_START_STEP = PPOConfig(iterations=2, prompts_per_iteration=32, lr=1e-3, kl_coef=0.0)


@pytest.mark.parametrize(
    "train, config",
    [
        (train_neural_gail, NeuralGAILConfig(rounds=10, policy_step=BLANK_START_STEP)),
        (train_neural_airl, NeuralAdversarialIRLConfig(rounds=10, policy_step=BLANK_START_STEP)),
    ],
    ids=["gail", "airl"],
)
def test_adversarial_imitation_raises_the_true_return_to_the_demonstrator(train, config) -> None:
    """From a blank transformer (J ~ -2.6, the uniform policy's -2.5) to about the demonstrator's
    J (-0.79) in 10 rounds on each of 4 seeds, 100 demonstrations; exact J by enumeration.
    Measured (seeds 0..3): GAIL -0.50, -0.64, -0.79, -0.67; AIRL (default discriminator: a
    normalised copy of the start; PPO discounted by AIRL's gamma) -0.94, -0.74, -0.76, -0.90.
    Discriminator accuracy, first round -> mean of the last three: GAIL 0.72-0.80 -> 0.47-0.55,
    AIRL 0.67-0.75 -> 0.51-0.52 (the smallest fall, seed 1, is 0.145).
    Asked on every seed: a gain > 1.2, within 0.3 of the demonstrator, and the accuracy falling
    by more than 0.1."""
    world = make_world("tiny")
    j_demonstrator = exact_return(world, world.demonstrator())
    for seed in SEEDS:
        g = torch.Generator().manual_seed(seed)
        demos = Demonstrations.collect(world, 100, g)
        policy = tiny_learner(world, seed)
        j_start = enumerated_return(world, policy)
        trained = train(policy, demos, world.dynamics(), config, g)
        policy, records = trained.policy, trained.records
        j_end = enumerated_return(world, policy)
        assert j_end > j_start + 1.2, (seed, j_start, j_end)
        assert j_end > j_demonstrator - 0.3, (seed, j_end, j_demonstrator)
        assert len(records) == 10 and records[-1]["round"] == 10
        late = sum(r["disc/accuracy"] for r in records[-3:]) / 3
        assert late < records[0]["disc/accuracy"] - 0.1, (seed, records[0], late)
