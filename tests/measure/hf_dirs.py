"""Hugging Face model directories for the measure tests, built locally (nothing downloaded):
a `CausalLMPolicy` saved with `.save()` beside a word-level tokenizer over its vocabulary."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from irlhf.policies.causal_lm import CausalLMPolicy


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """Token i is words[i]; words are separated by whitespace; no special tokens."""
    vocab = {word: i for i, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=words[0]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def token_words(n: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def save_model(policy: CausalLMPolicy, path: Path, words: list[str]) -> Path:
    """policy.save(path) and the word tokenizer beside it."""
    policy.save(path)
    word_tokenizer(words).save_pretrained(path)
    return path
