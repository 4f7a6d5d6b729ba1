"""`irlhf measure rewards`: the distribution of a reward model's scores on each model's
continuations of the prompts, the analogue for a user's own models of Llama 2's Figure 20
(Touvron et al. 2023, arXiv 2307.09288: the reward distribution of successive RLHF versions).

Models m = 0..M-1 (say an SFT model, then its RLHF'd versions) each continue every prompt x_i
`samples` times under one decoding, y^m_ij ~ m(. | x_i), and the reward model scores the whole
text r(x_i, y^m_ij). Reported (`irlhf.measure.rewards_report`): per model, the histogram and
Gaussian KDE of the scores (one panel, overlaid, as Figure 20), the mean over prompts of the
per-prompt mean score, the standard deviation and quantiles of all scores; per ordered pair of
models (a, b), the win rate

    W(a, b) = (1/n) sum_i (1/N^2) sum_{j,k} ([r(x_i, y^a_ij) > r(x_i, y^b_ik)] + 1/2 [=])

(the chance that a's continuation of a random prompt scores above b's, ties counted half) and the
difference of means. Each has a 95% percentile-bootstrap interval over prompts.

Reward models (`load_reward`):
- a Hugging Face `AutoModelForSequenceClassification` directory with one label (config.json,
  safetensors, tokenizer). When its tokenizer is the models' (same vocabulary) it reads the very
  token ids sampled (prompt + continuation: no decode/encode round trip); otherwise the text is
  decoded with the models' tokenizer (special tokens dropped) and re-tokenized with its own, as
  a reward model with its own tokenizer is used in RLHF (truncated to its context, with a note).
- an irlhf `NeuralRewardModel` directory (`NeuralRewardModel.save`: irlhf_reward_model.json,
  model.safetensors and a tokenizer). It has no text interface, only token ids, so its tokenizer
  must be the models' (vocabulary equality is checked).

Sampling uses common random numbers: every model draws from one generator seeded by `seed`, with
the same batches, so two copies of a model give identical continuations (W = 1/2 exactly) and
similar models are compared on paired draws. Rows are batched by prompt length (no padding: each
score is that of the sequence alone).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from irlhf.measure.bootstrap import CONFIDENCE, N_BOOTSTRAP
from irlhf.measure.exposure import NamedDecoding, _batches, _progress_bar, parse_decoding
from irlhf.measure.inputs import (
    MeasureInputError,
    Prompts,
    _first_line,
    check_pair,
    check_same_vocab,
    check_sampling,
    context_length,
    load_model,
    load_tokenizer,
    place,
    read_prompt_texts,
    resolve_device,
    resolve_dtype,
    tokenize_prompts,
)
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences


@dataclass(frozen=True)
class RewardScorer:
    """A loaded reward model: `kind` "classifier" (a Hugging Face sequence classifier) or
    "irlhf" (a NeuralRewardModel); `reads` "token ids" (the models' own) or "re-tokenized text"."""

    kind: str
    model: Any
    tokenizer: Any
    reads: str
    context: int | None

    def score_ids(self, tokens: Tensor, prompt_length: int) -> Tensor:
        """[B] float64 scores of equal-length rows `tokens` [B, T] whose first `prompt_length`
        tokens are the prompt (the reward model's own ids)."""
        with torch.inference_mode():
            if self.kind == "irlhf":
                completion = torch.zeros_like(tokens, dtype=torch.bool)
                completion[:, prompt_length:] = True
                seqs = Sequences(tokens, ~completion, completion)
                return self.model.score(seqs).double().cpu()
            ones = torch.ones_like(tokens)
            logits = self.model(input_ids=tokens, attention_mask=ones).logits  # (B, 1)
            return logits[:, 0].double().cpu()

    @property
    def rows_per_forward(self) -> int | None:
        """A classifier without a pad token scores one row per forward (Hugging Face's limit)."""
        if self.kind == "classifier" and self.model.config.pad_token_id is None:
            return 1
        return None


def _sequence_classifier_names() -> tuple[set[str], set[str]]:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as NAMES,
    )

    classes: set[str] = set()
    for value in NAMES.values():
        classes.update([value] if isinstance(value, str) else value)
    return set(NAMES), classes


def _load_classifier(path: Path, option: str) -> Any:
    """A one-label AutoModelForSequenceClassification from safetensors, every weight present."""
    from transformers import AutoModelForSequenceClassification

    where = f"{option} {path}"
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        assert isinstance(config, dict), "not a JSON object"
    except Exception as err:
        raise MeasureInputError(f"{where}: config.json is unreadable ({_first_line(err)})") from err
    types, classes = _sequence_classifier_names()
    listed = config.get("architectures") or []
    if config.get("model_type") not in types or (listed and not set(listed) & classes):
        raise MeasureInputError(
            f"{where} is not a sequence classifier (model_type {config.get('model_type')!r}, "
            f"architectures {listed}); expected e.g. GPT2ForSequenceClassification, "
            "or an irlhf reward model (irlhf_reward_model.json)"
        )
    labels = len(config["id2label"]) if "id2label" in config else config.get("num_labels", 2)
    if labels != 1:
        raise MeasureInputError(
            f"{where} has {labels} labels; a reward model scores with one (num_labels=1)"
        )
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin"))
        found = f"only pickle weights {pickles}, which are never loaded" if pickles else "none"
        raise MeasureInputError(f"{where} has no *.safetensors weights ({found})")
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, local_files_only=True, output_loading_info=True
        )
    except Exception as err:  # safetensors, JSON and transformers errors alike
        raise MeasureInputError(f"{where} could not be loaded: {_first_line(err)}") from err
    # transformers fills missing weights (a score head!) with random ones: never score with those
    missing = sorted(info["missing_keys"]) + sorted(map(str, info["mismatched_keys"]))
    if missing:
        raise MeasureInputError(f"{where} lacks weights, e.g. {missing[:3]}")
    return model


def load_reward(path: str | Path, models_tok: Any, option: str = "--reward") -> RewardScorer:
    """The reward model of a directory (module docstring), checked against the models'
    tokenizer, or a one-line MeasureInputError."""
    from transformers.utils import logging as hf_logging

    from irlhf.algorithms.reward_model import REWARD_MODEL_FILE, NeuralRewardModel

    path = Path(path)
    where = f"{option} {path}"
    expected = (
        "expected a Hugging Face sequence classifier with one label (config.json, "
        f"*.safetensors, tokenizer) or an irlhf reward model ({REWARD_MODEL_FILE})"
    )
    if not path.is_dir():
        raise MeasureInputError(f"{where} does not exist or is not a directory; {expected}")
    hf_logging.disable_progress_bar()
    if (path / REWARD_MODEL_FILE).is_file():
        tokenizer = load_tokenizer(path, option)
        check_same_vocab(tokenizer, models_tok, (option, "--models"))
        try:
            reward = NeuralRewardModel.load(path)
        except ValueError as err:
            raise MeasureInputError(f"{option}: {_first_line(err)}") from err
        backbones = [cast(Any, m.backbone) for m in reward.members]
        vocab = min(b.config.vocab_size for b in backbones)
        contexts = [getattr(b.config, "max_position_embeddings", None) for b in backbones]
        known = [c for c in contexts if c is not None]
        scorer = RewardScorer("irlhf", reward, tokenizer, "token ids", min(known, default=None))
    elif (path / "config.json").is_file():
        model = _load_classifier(path, option)
        tokenizer = load_tokenizer(path, option)
        same = tokenizer.get_vocab() == models_tok.get_vocab()
        reads = "token ids" if same else "re-tokenized text"
        vocab = model.config.vocab_size
        context = getattr(model.config, "max_position_embeddings", None)
        scorer = RewardScorer("classifier", model.eval(), tokenizer, reads, context)
    else:
        raise MeasureInputError(f"{where} has no config.json; {expected}")
    needed = max(tokenizer.get_vocab().values()) + 1
    if vocab < needed:
        raise MeasureInputError(
            f"{where} embeds {vocab} token ids, fewer than its tokenizer's {needed}"
        )
    return scorer


@dataclass(frozen=True)
class Setup:
    """Validated inputs of one measurement (everything checked before anything is computed)."""

    models: tuple[CausalLMPolicy, ...]
    names: tuple[str, ...]
    tokenizer: Any
    reward: RewardScorer
    prompts: Prompts
    decoding: NamedDecoding
    device: torch.device


def prepare(
    reward_dir: str | Path,
    model_dirs: Sequence[str | Path],
    prompts: str | Path | Sequence[str],
    max_new_tokens: int,
    decoding: str,
    temperature: float,
    samples: int,
    batch_size: int,
    device: str,
    dtype: str,
    prompt_field: str,
) -> Setup:
    """Check every input (a one-line MeasureInputError on the first bad one) and load it."""
    check_sampling(max_new_tokens, samples, batch_size, temperature)
    if isinstance(model_dirs, (str, Path)) or not model_dirs:
        raise MeasureInputError("--models: give at least one model directory (repeat --models)")
    named = parse_decoding(decoding, temperature)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    texts = read_prompt_texts(prompts, prompt_field)
    options = [f"--models {d}" for d in model_dirs]
    loaded = [load_model(d, option) for d, option in zip(model_dirs, options, strict=True)]
    models = tuple(policy for policy, _ in loaded)
    tokenizer = loaded[0][1]
    for i in range(1, len(loaded)):
        check_pair(models[0], tokenizer, models[i], loaded[i][1], (options[0], options[i]))
    common = min(m.action_vocab_size for m in models)
    for model in models:  # every model samples over the ids all of them predict
        model.action_vocab_size = common
    reward = load_reward(reward_dir, tokenizer)
    contexts = [context_length(m) for m in models]
    if reward.reads == "token ids":
        contexts.append(reward.context)
    known = [c for c in contexts if c is not None]
    tokenized = tokenize_prompts(
        texts, tokenizer, min(m.vocab_size for m in models), min(known, default=None),
        max_new_tokens,
    )  # fmt: skip
    place(models, torch_device, torch_dtype)
    for module in getattr(reward.model, "members", [reward.model]):  # irlhf's: K members
        cast(nn.Module, module).to(device=torch_device, dtype=torch_dtype)
    names = tuple(f"[{i}] {Path(d).name}" for i, d in enumerate(model_dirs))
    return Setup(models, names, tokenizer, reward, tokenized, named, torch_device)


@dataclass(frozen=True)
class Measured:
    """scores [M, n_prompts, N] float64 (model, prompt, sample) and one row per continuation."""

    scores: np.ndarray
    samples: list[dict[str, Any]]
    truncated: int


def _score_text(setup: Setup, rows: list[dict[str, Any]], batch_size: int, progress: Any) -> int:
    """Score every row's decoded text with the reward model's own tokenizer ("score" set in
    place), rows of one token length per forward (no padding). Returns how many were truncated
    to the reward model's context."""
    tok, context, truncated = setup.reward.tokenizer, setup.reward.context, 0
    by_length: dict[int, list[tuple[dict[str, Any], list[int]]]] = {}
    for row in rows:
        ids = tok(row["text"])["input_ids"]
        if context is not None and len(ids) > context:
            ids = tok(row["text"], truncation=True, max_length=context)["input_ids"]
            truncated += 1
        by_length.setdefault(len(ids), []).append((row, ids))
    step = setup.reward.rows_per_forward or batch_size
    for group in by_length.values():
        for start in range(0, len(group), step):
            part = group[start : start + step]
            tokens = torch.tensor([ids for _, ids in part], device=setup.device)
            for (row, _), score in zip(
                part, setup.reward.score_ids(tokens, 0).tolist(), strict=True
            ):
                row["score"] = score
            if progress is not None:
                progress(len(part))
    return truncated


def run(
    setup: Setup,
    max_new_tokens: int,
    samples: int,
    seed: int,
    batch_size: int,
    progress: Any = None,
) -> Measured:
    """Sample every model's continuations (common random numbers, module docstring) and score
    them. `progress(n)` (optional) is called after each batch of `n` rows."""
    L, n, d = max_new_tokens, len(setup.prompts.ids), setup.decoding.decoding
    N = 1 if d.greedy else samples
    state = int(np.random.SeedSequence([seed]).generate_state(1)[0])
    kept: list[dict[str, Any]] = []
    for m, model in enumerate(setup.models):
        generator = torch.Generator(device=setup.device).manual_seed(state)  # the same for all
        seen: dict[int, int] = {}
        for rows in _batches(setup.prompts, N, batch_size):
            prompt = torch.tensor([setup.prompts.ids[i] for i in rows], device=setup.device)
            seqs = model.sample(prompt, L, generator, d.temperature, d.top_k, d.top_p, d.greedy)
            batch_scores: list[float | None] = [None] * len(rows)  # re-tokenized: below
            if setup.reward.reads == "token ids":
                step = setup.reward.rows_per_forward or len(rows)
                batch_scores = [
                    s
                    for start in range(0, len(rows), step)
                    for s in setup.reward.score_ids(
                        seqs.tokens[start : start + step], seqs.prompt_length
                    ).tolist()
                ]
            completions = seqs.tokens[:, seqs.prompt_length :].cpu().tolist()
            for i, ids, score in zip(rows.tolist(), completions, batch_scores, strict=True):
                seen[i] = seen.get(i, -1) + 1
                kept.append({"model": setup.names[m], "model_index": m, "prompt_index": i,
                             "sample": seen[i], "completion_ids": ids, "score": score})  # fmt: skip
            if progress is not None:
                progress(len(rows))
    for row in kept:
        ids = list(setup.prompts.ids[row["prompt_index"]]) + row["completion_ids"]
        row["completion"] = setup.tokenizer.decode(row["completion_ids"])
        row["text"] = setup.tokenizer.decode(ids, skip_special_tokens=True)
    truncated = 0
    if setup.reward.reads == "re-tokenized text":
        truncated = _score_text(setup, kept, batch_size, progress)
    scores = np.zeros((len(setup.models), n, N))
    for row in kept:
        scores[row["model_index"], row["prompt_index"], row["sample"]] = row["score"]
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        raise MeasureInputError(
            f"--reward gave {bad} non-finite scores (of {scores.size}); try --dtype float32"
        )
    kept.sort(key=lambda r: (r["model_index"], r["prompt_index"], r["sample"]))
    return Measured(scores, kept, truncated)


def total_rows(setup: Setup, samples: int) -> int:
    """Rows `run` samples (and, re-tokenizing, scores apart) for a progress bar."""
    N = 1 if setup.decoding.decoding.greedy else samples
    rows = len(setup.models) * len(setup.prompts.ids) * N
    return 2 * rows if setup.reward.reads == "re-tokenized text" else rows


def measure_rewards(
    reward_dir: str | Path,
    model_dirs: Sequence[str | Path],
    prompts: str | Path | Sequence[str],
    out_dir: str | Path,
    max_new_tokens: int = 64,
    decoding: str = "sample",
    temperature: float = 1.0,
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "float32",
    prompt_field: str = "prompt",
    progress: bool = False,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict[str, Any]:
    """Score every model's continuations of `prompts` (a file or datasets directory,
    `irlhf.measure.inputs.load_prompts`, or a list of strings) with the reward model (module
    docstring) and write OUT_DIR/measure.json, results.parquet, samples.parquet, figures and
    report.html.

    Every input is checked before anything is computed or written (a one-line
    `MeasureInputError` on the first bad one). `samples` continuations per prompt and model (one
    for greedy). Returns the contents of measure.json."""
    from irlhf.measure.rewards_report import summarise, write_outputs

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MeasureInputError(f"--out {out} is a file; expected a directory (new or existing)")
    setup = prepare(
        reward_dir, model_dirs, prompts, max_new_tokens, decoding, temperature, samples,
        batch_size, device, dtype, prompt_field,
    )  # fmt: skip
    if progress:
        with _progress_bar(total_rows(setup, samples), "measure rewards") as bar:
            task = bar.add_task("measure", total=total_rows(setup, samples))
            measured = run(setup, max_new_tokens, samples, seed, batch_size,
                           lambda k: bar.advance(task, k))  # fmt: skip
    else:
        measured = run(setup, max_new_tokens, samples, seed, batch_size)
    inputs = {
        "reward": str(reward_dir),
        "reward_kind": setup.reward.kind,
        "reward_reads": setup.reward.reads,
        "models": [str(d) for d in model_dirs],
        "prompts": str(prompts) if isinstance(prompts, (str, Path)) else "(a list of strings)",
        "prompt_field": prompt_field,
        "n_prompts": len(setup.prompts.ids),
        "max_new_tokens": max_new_tokens,
        "decoding": setup.decoding.name,
        "temperature": temperature,
        "samples": int(measured.scores.shape[2]),
        "seed": seed,
        "batch_size": batch_size,
        "device": str(setup.device),
        "dtype": dtype,
        "n_bootstrap": n_bootstrap,
        "confidence": CONFIDENCE,
    }
    table = summarise(measured.scores, seed, n_bootstrap)
    notes = []
    if measured.truncated:
        notes.append(
            f"{measured.truncated} of {measured.scores.size} texts were longer than the reward "
            f"model's context of {setup.reward.context} tokens and were truncated to it"
        )
    return write_outputs(out, table, measured.scores, setup.names, inputs, measured.samples, notes)
