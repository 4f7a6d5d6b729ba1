"""The learner table shared by the kinds (`irlhf.kinds.common.PolicySpec`, `build_policy`)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from irlhf.kinds.common import PolicySpec, build_policy
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.world_spec import make_world
from irlhf.policies.causal_lm import CausalLMPolicy


def test_policy_window_builds_a_windowed_llama() -> None:
    """`policy.window = 2`: the learner's logits at t ignore every token before t - 2 (two
    layers, each seeing itself and the token before)."""
    policy_spec = PolicySpec(kind="causal_lm", arch="llama", window=2)
    config = ImitationConfig.model_validate({"world": {"preset": "tiny"}, "policy": policy_spec})
    policy = build_policy(config, make_world(config.world))
    assert isinstance(policy, CausalLMPolicy) and policy.model.config.sliding_window == 2
    tokens = torch.tensor([[0, 1, 0, 1, 1, 0]])
    changed = tokens.clone()
    changed[0, :2] = 1 - changed[0, :2]
    with torch.no_grad():
        logits = [policy.model(input_ids=t.to(policy.device)).logits[0] for t in (tokens, changed)]
    assert torch.equal(logits[0][4:], logits[1][4:])  # positions 4, 5 see tokens 2..5
    assert not torch.equal(logits[0][2], logits[1][2])  # position 2 sees tokens 0..2


def test_policy_window_needs_llama() -> None:
    with pytest.raises(ValidationError, match="policy.window needs arch 'llama', got 'gpt2'"):
        PolicySpec(kind="causal_lm", window=2)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        PolicySpec(kind="causal_lm", arch="llama", window=0)
