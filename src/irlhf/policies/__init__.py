"""Policies: a table over automaton states, or any Hugging Face causal LM."""

from typing import Any

from irlhf.policies.tabular import TabularPolicy

__all__ = ["CausalLMPolicy", "TabularPolicy"]


def __getattr__(name: str) -> Any:
    # transformers is slow to import; only pay for it when a neural policy is asked for.
    if name == "CausalLMPolicy":
        from irlhf.policies.causal_lm import CausalLMPolicy

        return CausalLMPolicy
    raise AttributeError(name)
