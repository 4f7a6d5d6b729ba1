"""Shared by the neural IRL tests: exact true return of a neural policy in a world small enough to
enumerate (the `tiny` preset: 2 tokens, horizon 4, so 16 completions per start state)."""

from __future__ import annotations

import torch

from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences
from irlhf.worlds.automaton import AutomatonWorld


def enumerated_return(world: AutomatonWorld, policy: CausalLMPolicy) -> float:
    """J(policy) = sum over start states s and every completion y of p(s) pi(y | s) R*(s, y),
    exactly (no Monte-Carlo error)."""
    V, H = world.vocab_size, world.horizon
    completions = torch.cartesian_prod(*[torch.arange(V)] * H).view(-1, H)  # (V^H, H)
    total = 0.0
    for state in torch.nonzero(world.start).flatten().tolist():
        prompts = torch.full((len(completions), 1), V + state, dtype=torch.long)
        seqs = Sequences.from_prompt_and_completion(prompts, completions)
        with torch.inference_mode():
            probs = policy.log_probs(seqs).double().sum(1).exp()  # (V^H,)
        assert abs(float(probs.sum()) - 1.0) < 1e-4  # the enumeration is complete
        total += float(world.start[state]) * float((probs * world.true_return(seqs)).sum())
    return total


def tiny_learner(world: AutomatonWorld, seed: int) -> CausalLMPolicy:
    """A blank tiny transformer learner for `world` (near-uniform at initialisation)."""
    return CausalLMPolicy.tiny(
        world.token_vocab_size,
        world.vocab_size,
        n_layer=2,
        n_embd=32,
        n_head=2,
        max_length=world.horizon + 1,
        seed=seed,
    )
