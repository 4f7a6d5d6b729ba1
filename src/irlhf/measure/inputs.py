"""What `irlhf measure` reads: model directories, their tokenizers, prompts, device and dtype.

Every check here runs before a measurement computes or writes anything, and every failure is a
one-line `MeasureInputError` (a ValueError) that names the input, what is wrong and what is
allowed; the CLI prints it and exits with code 2.

- A model directory holds config.json, safetensors weights (never a pickle: loaded by
  `CausalLMPolicy.from_pretrained`) and a tokenizer (`AutoTokenizer`, local files only, never
  `trust_remote_code`); its config must name a causal LM.
- Prompts: a .txt file (one prompt per line, blank lines skipped), .jsonl or .json (objects
  with a `prompt` field, TRL's convention, or another named by `field`), .parquet (a column), or
  a directory written by `datasets`' `save_to_disk` (a Dataset, or a DatasetDict of one split).
- Devices are resolved in one place (`resolve_device`); dtypes by name (`DTYPES`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import torch
from torch import nn

from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.worlds.tokenizer import TOKENIZER_FILES

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROMPT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


class MeasureInputError(ValueError):
    """Bad input to a measurement: one line naming the input, the problem and what is allowed."""


def _fail(message: str) -> NoReturn:
    raise MeasureInputError(message)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def resolve_device(name: str) -> torch.device:
    """auto -> cuda if available, else mps if available, else cpu; an explicit device must be
    available."""
    if name not in DEVICES:
        _fail(f"--device must be one of {', '.join(DEVICES)} (got {name!r})")
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        _fail(f"--device {name} is not available on this machine (use auto or cpu)")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        _fail(f"--dtype must be one of {', '.join(DTYPES)} (got {name!r})")
    return DTYPES[name]


# ---- models -----------------------------------------------------------------------------------


def _causal_lm_classes() -> tuple[set[str], set[str]]:
    """(model types, architecture class names) that AutoModelForCausalLM loads."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES), names


def check_causal_lm(path: Path, option: str) -> None:
    """A directory whose config.json describes a causal LM (model type and, when it lists
    them, an architecture that AutoModelForCausalLM loads)."""
    where = f"{option} {path}"
    expected = "expected a Hugging Face causal LM directory (config.json, *.safetensors, tokenizer)"
    if not path.is_dir():
        _fail(f"{where} does not exist or is not a directory; {expected}")
    config_file = path / "config.json"
    if not config_file.is_file():
        _fail(f"{where} has no config.json; {expected}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        _fail(f"{where}: config.json is unreadable ({_first_line(err)}); {expected}")
    if not isinstance(config, dict):
        _fail(f"{where}: config.json is not a JSON object; {expected}")
    model_types, architectures = _causal_lm_classes()
    model_type = config.get("model_type")
    listed = config.get("architectures") or []
    known_type = model_type in model_types or (model_type is None and bool(listed))
    if not known_type or (listed and not set(listed) & architectures):
        what = f"model_type {model_type!r}" + (f", architectures {listed}" if listed else "")
        _fail(
            f"{where} is not a causal LM ({what}); expected e.g. GPT2LMHeadModel, LlamaForCausalLM"
        )


def load_tokenizer(path: Path, option: str) -> Any:
    """The tokenizer of a model directory (local files only, no remote code)."""
    from transformers import AutoTokenizer

    where = f"{option} {path}"
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        _fail(f"{where} has no tokenizer (needs one of {', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:  # OSError, ValueError, JSON errors alike
        _fail(f"{where} has no usable tokenizer: {_first_line(err)}")
    if len(tokenizer) < 2:
        _fail(f"{where} has an empty tokenizer ({len(tokenizer)} tokens)")
    return tokenizer


def load_model(path: str | Path, option: str) -> tuple[CausalLMPolicy, Any]:
    """(policy in eval mode, tokenizer) of a model directory, or a one-line MeasureInputError."""
    from transformers.utils import logging as hf_logging

    path = Path(path)
    check_causal_lm(path, option)
    tokenizer = load_tokenizer(path, option)
    hf_logging.disable_progress_bar()
    try:
        policy = CausalLMPolicy.from_pretrained(path)
    except ValueError as err:
        _fail(f"{option}: {_first_line(err)}")
    for param in policy.parameters():
        param.requires_grad_(False)
    return policy.eval(), tokenizer


def context_length(policy: CausalLMPolicy) -> int | None:
    """The model's context in tokens (None: no limit in its config)."""
    return getattr(policy.model.config, "max_position_embeddings", None)


def check_same_vocab(first_tok: Any, second_tok: Any, names: tuple[str, str]) -> None:
    """Two tokenizers with the same vocabulary (token -> id), or a one-line error naming both
    inputs (`names`, e.g. ("--expert", "--model"))."""
    first, second = first_tok.get_vocab(), second_tok.get_vocab()
    if first != second:
        differ = len(set(first.items()) ^ set(second.items()))
        _fail(
            f"{names[0]} and {names[1]} have different tokenizers ({len(first)} vs "
            f"{len(second)} tokens, {differ} token-id pairs differ); they must share one"
        )


def check_pair(
    expert: CausalLMPolicy,
    expert_tok: Any,
    model: CausalLMPolicy,
    model_tok: Any,
    names: tuple[str, str] = ("--expert", "--model"),
) -> None:
    """Expert and model must share a tokenizer (the same vocabulary: token -> id). Their output
    layers may differ in size only by padding beyond the tokenizer's ids (as in model families
    whose embedding matrices are rounded up): both distributions are then taken over the
    common ids (`action_vocab_size` set to the smaller size, renormalised), which hold every
    token the tokenizer can produce. `names`: the two inputs as the errors name them."""
    check_same_vocab(expert_tok, model_tok, names)
    sizes = (expert.action_vocab_size, model.action_vocab_size)
    common, needed = min(sizes), max(expert_tok.get_vocab().values()) + 1
    if sizes[0] != sizes[1] and common < needed:
        _fail(
            f"{names[0]} and {names[1]} predict different vocabularies ({sizes[0]} vs {sizes[1]} "
            f"tokens) and the smaller does not cover the tokenizer's {needed} ids; they must "
            "share one"
        )
    expert.action_vocab_size = model.action_vocab_size = common


# ---- prompts ----------------------------------------------------------------------------------


def _column(rows: Sequence[Any], field: str, where: str) -> list[Any]:
    if not rows:
        _fail(f"{where} holds no prompts; expected at least one")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            _fail(f"{where}: record {i} is not an object; expected objects with a {field!r} field")
        if field not in row:
            found = ", ".join(map(repr, list(row)[:8])) or "none"
            _fail(
                f"{where}: record {i} has no field {field!r} (fields: {found}); "
                "choose one with --prompt-field"
            )
    return [row[field] for row in rows]


def _read_records(path: Path, field: str) -> list[Any]:
    where = f"--prompts {path}"
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if suffix == ".jsonl":
            rows = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        _fail(f"{where}: line {number} is not JSON ({err.msg})")
            return _column(rows, field, where)
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                _fail(f"{where} must hold a JSON list of objects with a {field!r} field")
            return _column(data, field, where)
        if suffix == ".parquet":
            import pandas as pd

            table = pd.read_parquet(path)
            if field not in table.columns:
                _fail(
                    f"{where} has no column {field!r} "
                    f"(columns: {', '.join(map(str, table.columns))}); "
                    "choose one with --prompt-field"
                )
            return table[field].tolist()
    except MeasureInputError:
        raise
    except Exception as err:  # UnicodeDecodeError, JSONDecodeError, pyarrow errors alike
        _fail(f"{where} is unreadable: {_first_line(err)}")
    _fail(f"{where}: unknown format; expected {', '.join(PROMPT_SUFFIXES)} or a datasets directory")


def _read_dataset(path: Path, field: str) -> list[Any]:
    where = f"--prompts {path}"
    try:
        from datasets import Dataset, DatasetDict, load_from_disk

        data = load_from_disk(str(path))
    except Exception as err:
        _fail(f"{where} is not a datasets directory saved with save_to_disk: {_first_line(err)}")
    if isinstance(data, DatasetDict):
        if len(data) != 1:
            _fail(f"{where} holds splits {list(data)}; expected a Dataset or a single split")
        data = next(iter(data.values()))
    if not isinstance(data, Dataset):
        _fail(f"{where}: expected a Dataset, got {type(data).__name__}")
    if field not in data.column_names:
        _fail(
            f"{where} has no column {field!r} (columns: {', '.join(data.column_names)}); "
            "choose one with --prompt-field"
        )
    return list(data[field])


def load_prompts(path: str | Path, field: str = "prompt") -> list[str]:
    """The prompts of a file or datasets directory (formats: the module docstring)."""
    path = Path(path)
    where = f"--prompts {path}"
    if path.is_dir():
        values = _read_dataset(path, field)
    elif path.is_file():
        values = _read_records(path, field)
    else:
        _fail(
            f"{where} does not exist; expected a {'/'.join(PROMPT_SUFFIXES)} file "
            "or a datasets directory"
        )
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            _fail(f"{where}: prompt {i} is {value!r}; every prompt must be a non-empty string")
    if not values:
        _fail(f"{where} holds no prompts; expected at least one")
    return values


@dataclass(frozen=True)
class Prompts:
    """Tokenized prompts: `ids[i]` the token ids of `texts[i]` (the tokenizer's own special
    tokens included, as the model saw them in training)."""

    texts: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]


def tokenize_prompts(
    texts: Sequence[str],
    tokenizer: Any,
    model_vocab: int,
    context: int | None,
    max_new_tokens: int,
) -> Prompts:
    """Token ids of every prompt; each must be non-empty, use ids the model embeds and fit the
    context with `max_new_tokens` new tokens."""
    if context is not None and max_new_tokens >= context:
        _fail(
            f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's "
            f"context of {context} tokens (allowed: at most {context - 1})"
        )
    ids = []
    for i, text in enumerate(texts):
        tokens = tuple(int(t) for t in tokenizer(text)["input_ids"])
        if not tokens:
            _fail(f"--prompts: prompt {i} ({text[:40]!r}) has no tokens")
        if max(tokens) >= model_vocab:
            _fail(
                f"--prompts: prompt {i} holds token id {max(tokens)} >= the models' {model_vocab}"
            )
        if context is not None and len(tokens) + max_new_tokens > context:
            _fail(
                f"--prompts: prompt {i} ({text[:40]!r}) is {len(tokens)} tokens; with "
                f"--max-new-tokens {max_new_tokens} it exceeds the model's context of {context} "
                f"tokens (allowed: at most {context - max_new_tokens} prompt tokens)"
            )
        ids.append(tokens)
    return Prompts(tuple(texts), tuple(ids))


# ---- shared by the measurements ---------------------------------------------------------------


def check_integers(*checks: tuple[str, Any, int]) -> None:
    """Each (option, value, low): value must be an int >= low."""
    for option, value, low in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            _fail(f"{option} must be an integer >= {low} (got {value!r})")


def check_sampling(max_new_tokens: int, samples: int, batch_size: int, temperature: float) -> None:
    """The sampling options every command that samples continuations shares."""
    check_integers(
        ("--max-new-tokens", max_new_tokens, 1), ("--samples", samples, 1),
        ("--batch-size", batch_size, 1),
    )  # fmt: skip
    if not temperature > 0:
        _fail(f"--temperature must be > 0 (got {temperature})")


def read_prompt_texts(
    prompts: str | Path | Sequence[str], field: str = "prompt", option: str = "--prompts"
) -> list[str]:
    """The prompts of a file or datasets directory (`load_prompts`) or of a list of strings;
    errors name `option` (e.g. --sentences for a file read like a prompts file)."""
    if isinstance(prompts, (str, Path)):
        try:
            return load_prompts(prompts, field)
        except MeasureInputError as err:
            if option == "--prompts":
                raise
            raise MeasureInputError(str(err).replace("--prompts", option, 1)) from None
    texts = list(prompts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        _fail(f"{option}: expected at least one non-empty string")
    return texts


def place(policies: Sequence[CausalLMPolicy], device: torch.device, dtype: torch.dtype) -> None:
    """Move every policy's network to `device` and `dtype` (the forward passes' precision)."""
    for policy in policies:
        cast(nn.Module, policy.model).to(
            device=device, dtype=dtype
        )  # transformers' `to` is mistyped
