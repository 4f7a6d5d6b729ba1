"""The shared policy-gradient path: the sampler's log-probs are the policy's (so the first
minibatch's ratio is exactly 1), the one training forward's alignment of log-probs and values,
where scores land, the KL-shaped reward, and the minibatch update with its target-KL stop."""

from __future__ import annotations

import pytest
import torch
from rl_helpers import V, contains_three, prompts, tiny_policy
from torch import nn

from irlhf import losses
from irlhf.algorithms import policy_gradient as pg
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences

pytestmark = pytest.mark.usefixtures("one_thread")


def sharpened(seed: int) -> CausalLMPolicy:
    """A policy with uneven next-token distributions (a random init is nearly uniform)."""
    policy = tiny_policy(seed)
    with torch.no_grad():
        for param in policy.model.transformer.ln_f.parameters():
            param.mul_(5.0)
    return policy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_log_probs_are_the_policys_log_probs(temperature: float) -> None:
    policy = sharpened(0)
    g = torch.Generator().manual_seed(0)
    seqs, sampled = policy.sample_with_log_probs(prompts(64, g), 8, g, temperature=temperature)
    with torch.no_grad():
        trained, _ = pg.forward(policy, seqs, temperature)
        if temperature == 1.0:
            torch.testing.assert_close(trained, policy.log_probs(seqs), atol=1e-5, rtol=0)
    assert sampled[:, 1:].std() > 0.5  # far from uniform (log 1/16 everywhere)
    torch.testing.assert_close(sampled, trained, atol=1e-5, rtol=0)


def test_first_minibatch_has_ratio_one_so_nothing_is_clipped() -> None:
    policy = sharpened(1)
    g = torch.Generator().manual_seed(1)
    seqs, old = policy.sample_with_log_probs(prompts(64, g), 8, g)
    advantages = torch.randn(seqs.tokens.shape, generator=g)

    def loss_fn(mb: dict) -> tuple[torch.Tensor, dict]:
        log_probs, _ = pg.forward(policy, mb["sequences"])
        mask = mb["sequences"].completion_mask
        return losses.ppo_clip(log_probs, mb["old"], mb["advantages"], 1e-3, mask)

    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    batch = {"sequences": seqs, "old": old, "advantages": advantages}
    steps, stopped = pg.update(optimizer, batch, loss_fn, 2, 16, g)
    assert not stopped and len(steps) == 8
    first = steps[0]
    assert first["ppo/clipfrac"] == 0.0  # even at clip_eps = 1e-3
    assert abs(first["ppo/ratio_mean"] - 1.0) < 1e-5 and first["ppo/approx_kl"] < 1e-8
    assert max(s["ppo/clipfrac"] for s in steps[1:]) > 0.1  # later minibatches are off-policy


def test_target_kl_stops_before_the_first_step_that_exceeds_it() -> None:
    policy = tiny_policy(2)
    g = torch.Generator().manual_seed(2)
    seqs, old = policy.sample_with_log_probs(prompts(32, g), 4, g)
    advantages = torch.randn(32, generator=g)

    def loss_fn(mb: dict) -> tuple[torch.Tensor, dict]:
        log_probs, _ = pg.forward(policy, mb["sequences"])
        return losses.ppo_clip(log_probs.sum(1), mb["old"], mb["advantages"], 0.2)

    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    batch = {"sequences": seqs, "old": old.sum(1), "advantages": advantages}
    steps, stopped = pg.update(optimizer, batch, loss_fn, 4, 8, g, target_kl=1e-8)
    assert stopped and len(steps) == 1
    summary = pg.summarize(steps, stopped)
    assert summary["optim/steps"] == 1.0 and summary["optim/early_stop"] == 1.0
    steps, stopped = pg.update(optimizer, batch, loss_fn, 4, 8, g, target_kl=None)
    assert not stopped and len(steps) == 16


def test_forward_aligns_values_with_the_prefix_before_each_token() -> None:
    policy = tiny_policy(3)
    head = nn.Linear(32, 1)
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, V, (4, 3), generator=g)
    seqs = policy.sample(prompt, 5, g)
    with torch.no_grad():
        log_probs, values = pg.forward(policy, seqs, 1.0, lambda h: head(h).squeeze(-1))
        hidden = policy.model(input_ids=seqs.tokens, output_hidden_states=True).hidden_states[-1]
        expected = head(hidden).squeeze(-1)  # (B, T): value of the prefix ending at t
    assert values is not None and values.shape == seqs.tokens.shape
    assert values[:, :3].abs().max() == 0 and log_probs[:, :3].abs().max() == 0
    torch.testing.assert_close(values[:, 3:], expected[:, 2:-1])  # token t <- prefix < t
    torch.testing.assert_close(log_probs, policy.log_probs(seqs), atol=1e-5, rtol=0)


def test_sequence_scores_land_on_the_last_completion_token() -> None:
    tokens = torch.tensor([[9, 1, 2, 3, 0], [9, 4, 5, 0, 0]])
    prompt_mask = torch.zeros_like(tokens, dtype=torch.bool)
    prompt_mask[:, 0] = True
    completion = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    seqs = Sequences(tokens, prompt_mask, completion)
    placed = pg.token_scores(torch.tensor([2.0, -1.0]), seqs)
    assert placed.tolist() == [[0, 0, 0, 2.0, 0], [0, 0, -1.0, 0, 0]]
    per_token = torch.arange(10.0).view(2, 5)
    assert torch.equal(pg.token_scores(per_token, seqs), per_token * completion)
    with pytest.raises(ValueError, match="score must return float"):
        pg.token_scores(torch.zeros(3), seqs)


def test_rollout_shapes_the_reward_with_the_kl_to_the_reference() -> None:
    policy, reference = sharpened(4), tiny_policy(5)
    g = torch.Generator().manual_seed(4)
    batch, metrics = pg.rollout(policy, reference, contains_three, prompts(64, g), 6, g, 0.5)
    seqs, mask = batch.sequences, batch.sequences.completion_mask
    with torch.no_grad():
        ref = reference.log_probs(seqs)
    torch.testing.assert_close(batch.ref_log_probs, ref, atol=1e-5, rtol=0)
    kl = (batch.log_probs - ref) * mask  # k1
    torch.testing.assert_close(batch.kl, kl, atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.rewards.sum(1), contains_three(seqs) - 0.5 * kl.sum(1))
    assert batch.scores[:, -1].tolist() == contains_three(seqs).tolist()
    assert metrics["kl/sequence"] > 0.5  # two different networks
    assert metrics["reward/total"] == pytest.approx(metrics["reward/mean"] - 0.5 * kl.sum(1).mean())
    with pytest.raises(ValueError, match="needs a reference"):
        pg.rollout(policy, None, contains_three, prompts(4, g), 6, g, kl_coef=0.1)


def test_config_rejects_bad_values_in_one_line() -> None:
    with pytest.raises(ValueError, match="kl_coef"):
        pg.PolicyGradientConfig(kl_coef=-1.0)
    with pytest.raises(ValueError, match="kl_estimator"):
        pg.PolicyGradientConfig(kl_estimator="k9")
