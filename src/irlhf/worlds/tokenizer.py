"""Tokenizers of the real-text world: a byte-level BPE trained on the corpus (Hugging Face
`tokenizers`), loading a model directory's tokenizer, and encoding a long text to token ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt")
"""Files one of which a model directory needs for its tokenizer."""


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (GPT-2's pre-tokenizer, no special tokens) trained on texts,
    as a transformers PreTrainedTokenizerFast (so `save_pretrained` writes tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def encode(tokenizer: Any, text: str) -> Tensor:
    """[N] long token ids of a (long) text, no special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return torch.tensor(backend.encode(text, add_special_tokens=False).ids, dtype=torch.long)
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)


def load_tokenizer(path: Path) -> Any:
    """The tokenizer saved in a model directory; a one-line ValueError if there is none."""
    from transformers import AutoTokenizer

    where = f"teacher directory {path}"
    # without these files transformers quietly builds an empty tokenizer instead of failing
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(f"{where} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # OSError, ValueError, JSON errors alike
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{where} has no usable tokenizer: {reason}") from e
    if len(tokenizer) < 2:
        raise ValueError(f"{where} has an empty tokenizer ({len(tokenizer)} tokens)")
    return tokenizer
