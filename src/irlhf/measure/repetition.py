"""`irlhf measure repetition`: Xu et al. 2022's self-reinforcement of repetition in a user's model
and the degeneration of its greedy and sampled continuations.

Two parts, each with 95% percentile-bootstrap intervals (`irlhf.measure.bootstrap`):

- Self-reinforcement (Xu et al. 2022, "Learning to break the loop", arXiv 2206.02369), by
  `irlhf.metrics.degeneration.self_reinforcement`: a sentence is repeated n = 1..N times in the
  context (after the tokenizer's own leading special tokens, e.g. BOS, if it adds any) and the
  model's probabilities of the tokens of the n-th copy give TP (their mean), IP (the fraction
  that rose above the first copy's) and WR (the fraction that rose and are the model's top-1),
  averaged over sentences; tp_rise[n] = TP[n] - TP[1]. Intervals resample sentences. A sentence
  is its tokens as the tokenizer gives them (without special tokens), copies joined with no
  separator: write a trailing space or newline into the sentence to get one. Sentences come
  from `sentences` (one per line, or the prompt formats); without it, the prompts themselves
  are the sentences (and without prompts, the sentences are the prompts).
- Degeneration (`irlhf.metrics.degeneration`): loop rate, soft loop rate, seq-rep-2/4, rep-1
  (window 64), distinct-1/2/4 of the model's greedy continuation and its `samples` sampled
  (temperature 1) continuations of each prompt, `max_new_tokens` tokens each, cut before the
  tokenizer's end-of-sequence token if it emits one. Every metric is the library's pooled
  metric over all continuations, written as a ratio of per-prompt sums so that each bootstrap
  replicate (prompts drawn with replacement, a prompt's continuations travel together) is one
  matrix product; the greedy - sample differences are paired on the same replicates. distinct-n
  gets a delete-one-prompt jackknife interval instead (`distinct_jackknife`: a resample's
  repeated prompts would count as repeated n-grams).

No output holds nan: a metric with nothing to measure (e.g. seq-rep-4 when every continuation
is shorter than 4 tokens) is left out with a note.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from scipy import sparse

from irlhf.measure.bootstrap import CONFIDENCE, N_BOOTSTRAP, bootstrap_weights, with_intervals
from irlhf.measure.exposure import _batches, _progress_bar
from irlhf.measure.inputs import (
    MeasureInputError,
    Prompts,
    check_integers,
    context_length,
    load_model,
    place,
    read_prompt_texts,
    resolve_device,
    resolve_dtype,
    tokenize_prompts,
)
from irlhf.measure.repetition_report import DECODINGS, Measured, write_outputs
from irlhf.metrics import degeneration as dg
from irlhf.policies.causal_lm import CausalLMPolicy

SR_QUANTITIES = ("tp", "ip", "wr")

Ratio = tuple[float, float]
"""(numerator, denominator) of one continuation's share of a pooled metric."""
PER_SEQUENCE: dict[str, Callable[[list[int]], Ratio]] = {
    "loop_rate": lambda s: (dg.loop_rate([s]), 1.0),
    "soft_loop_rate": lambda s: (dg.soft_loop_rate([s]), 1.0),
}


def _seq_rep(n: int) -> Callable[[list[int]], Ratio]:
    """seq-rep-n skips a sequence shorter than n (denominator 0)."""

    def share(s: list[int]) -> Ratio:
        return (dg.seq_rep_n([s], n), 1.0) if len(s) >= n else (0.0, 0.0)

    return share


def _rep(n: int, window: int = 64) -> Callable[[list[int]], Ratio]:
    """rep-n pools positions: the repeated fraction times this sequence's n-gram positions."""

    def share(s: list[int]) -> Ratio:
        positions = max(0, len(s) - n + 1)
        return (dg.rep_n([s], n, window) * positions, float(positions)) if positions else (0.0, 0.0)

    return share


PER_SEQUENCE |= {"seq_rep_2": _seq_rep(2), "seq_rep_4": _seq_rep(4), "rep_1": _rep(1)}
DISTINCT = (1, 2, 4)
METRICS = (*PER_SEQUENCE, *(f"distinct_{n}" for n in DISTINCT))


@dataclass(frozen=True)
class Setup:
    """Validated inputs: the model, its tokenizer, the prompts, and the sentences' token ids
    (`prefix`: the tokenizer's leading special tokens, put before the first copy)."""

    model: CausalLMPolicy
    tokenizer: Any
    prompts: Prompts
    sentences: tuple[tuple[int, ...], ...]
    sentence_texts: tuple[str, ...]
    prefix: tuple[int, ...]
    sentence_source: str
    device: torch.device


def prepare(
    model_dir: str | Path,
    prompts: str | Path | Sequence[str] | None,
    sentences: str | Path | Sequence[str] | None,
    max_repeats: int,
    max_new_tokens: int,
    device: str,
    dtype: str,
    prompt_field: str,
) -> Setup:
    """Check every input (a one-line MeasureInputError on the first bad one) and load it."""
    if prompts is None and sentences is None:
        raise MeasureInputError("give --prompts, --sentences or both (each defaults to the other)")
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    prompt_texts = None if prompts is None else read_prompt_texts(prompts, prompt_field)
    sentence_texts = (
        prompt_texts
        if sentences is None
        else read_prompt_texts(sentences, prompt_field, "--sentences")
    )
    assert sentence_texts is not None  # one of the two was given
    source = (
        "the prompts (no --sentences)" if sentences is None
        else str(sentences) if isinstance(sentences, (str, Path)) else "(a list of strings)"
    )  # fmt: skip
    model, tokenizer = load_model(model_dir, "--model")
    context = context_length(model)
    tokenized = tokenize_prompts(
        prompt_texts or sentence_texts, tokenizer, model.vocab_size, context, max_new_tokens
    )
    prefix = tuple(int(t) for t in tokenizer("")["input_ids"])
    ids, cut = [], 0
    for i, text in enumerate(sentence_texts):
        s = tuple(int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"])
        option = "--sentences" if sentences is not None else "--prompts (the sentences)"
        where = f"{option}: sentence {i} ({text[:40]!r})"
        if len(s) < (1 if prefix else 2):
            raise MeasureInputError(
                f"{where} has {len(s)} tokens; self-reinforcement needs at least "
                f"{1 if prefix else 2} (the first token of a copy has no context otherwise)"
            )
        if max(s) >= model.action_vocab_size:
            raise MeasureInputError(f"{where} holds token id {max(s)} >= the model's vocabulary")
        fits = None if context is None else (context - len(prefix)) // max_repeats
        if sentences is None and fits is not None and (1 if prefix else 2) <= fits < len(s):
            # a prompt used as the sentence: its first tokens, so that N copies fit
            s, cut = s[:fits], cut + 1
        if fits is not None and len(s) > fits:
            raise MeasureInputError(
                f"{where} is {len(s)} tokens; {max_repeats} repeats exceed the model's context of "
                f"{context} tokens (use a shorter sentence or a smaller --max-repeats)"
            )
        ids.append(s)
    if cut:
        source += (
            f"; {cut} of {len(ids)} cut to their first {fits} tokens so that {max_repeats} "
            f"copies fit the model's context of {context}"
        )
    place([model], torch_device, torch_dtype)
    return Setup(
        model, tokenizer, tokenized, tuple(ids), tuple(sentence_texts), prefix, source,
        torch_device,
    )  # fmt: skip


# ---- measurement ------------------------------------------------------------------------------


def reinforcement(setup: Setup, max_repeats: int, progress: Any = None) -> dict[str, np.ndarray]:
    """[n_sentences, N] TP, IP and WR of each sentence at n = 1..N repeats."""
    out = {q: np.zeros((len(setup.sentences), max_repeats)) for q in SR_QUANTITIES}
    for i, s in enumerate(setup.sentences):
        for row in dg.self_reinforcement(setup.model, [s], max_repeats, setup.prefix):
            for q in SR_QUANTITIES:
                out[q][i, row["n_repeats"] - 1] = row[q]
        if progress is not None:
            progress(1)
    return out


def continuations(
    setup: Setup, max_new_tokens: int, samples: int, seed: int, batch_size: int, progress: Any
) -> list[dict[str, Any]]:
    """The greedy continuation and `samples` sampled ones of every prompt, cut before the
    tokenizer's end-of-sequence token. Each decoding draws from its own generator."""
    eos = getattr(setup.tokenizer, "eos_token_id", None)
    kept: list[dict[str, Any]] = []
    for decoding in DECODINGS:
        state = np.random.SeedSequence([seed, zlib.crc32(decoding.encode())]).generate_state(1)
        generator = torch.Generator(device=setup.device).manual_seed(int(state[0]))
        greedy = decoding == "greedy"
        seen: dict[int, int] = {}
        for rows in _batches(setup.prompts, 1 if greedy else samples, batch_size):
            prompt = torch.tensor([setup.prompts.ids[i] for i in rows], device=setup.device)
            seqs = setup.model.sample(prompt, max_new_tokens, generator, greedy=greedy)
            for i, ids in zip(
                rows.tolist(), seqs.tokens[:, prompt.shape[1] :].tolist(), strict=True
            ):
                if eos is not None and eos in ids:
                    ids = ids[: ids.index(eos)]
                seen[i] = seen.get(i, -1) + 1
                kept.append({"decoding": decoding, "prompt_index": i, "sample": seen[i],
                             "completion_ids": ids})  # fmt: skip
            if progress is not None:
                progress(len(rows))
    kept.sort(key=lambda r: (r["decoding"], r["prompt_index"], r["sample"]))
    for row in kept:
        row["completion"] = setup.tokenizer.decode(row["completion_ids"])
    return kept


# ---- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pooled:
    """One decoding's continuations as per-prompt sums [n_prompts]: a numerator and
    denominator per ratio metric, and per n the n-gram incidence (prompts x distinct n-grams)
    and n-gram counts of `distinct_n`."""

    ratios: dict[str, tuple[np.ndarray, np.ndarray]]
    incidence: dict[int, sparse.csr_matrix]
    grams: dict[int, np.ndarray]


def pool(rows: list[dict[str, Any]], n_prompts: int) -> Pooled:
    ratios = {name: (np.zeros(n_prompts), np.zeros(n_prompts)) for name in PER_SEQUENCE}
    sets: dict[int, list[set[tuple[int, ...]]]] = {
        n: [set() for _ in range(n_prompts)] for n in DISTINCT
    }
    grams = {n: np.zeros(n_prompts) for n in DISTINCT}
    for row in rows:
        i, s = row["prompt_index"], list(row["completion_ids"])
        for name, share in PER_SEQUENCE.items():
            num, den = share(s)
            ratios[name][0][i] += num
            ratios[name][1][i] += den
        for n in DISTINCT:
            found = dg._ngrams(s, n)
            sets[n][i].update(found)
            grams[n][i] += len(found)
    incidence = {}
    for n, per_prompt in sets.items():
        column: dict[tuple[int, ...], int] = {}  # n-gram -> its column
        rows_, cols = [], []
        for i, present in enumerate(per_prompt):
            for gram in present:
                rows_.append(i)
                cols.append(column.setdefault(gram, len(column)))
        incidence[n] = sparse.csr_matrix(
            (np.ones(len(rows_)), (rows_, cols)), shape=(n_prompts, len(column))
        )
    return Pooled(ratios, incidence, grams)


def degeneration(weights: np.ndarray, pooled: Pooled) -> dict[str, np.ndarray]:
    """Every metric [k] under prompt weights [k, n] (rows summing to 1; nan: undefined)."""
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, (num, den) in pooled.ratios.items():
            total = weights @ den
            out[name] = np.where(total > 0, (weights @ num) / np.where(total > 0, total, 1), np.nan)
        n_prompts = weights.shape[1]
        for n in DISTINCT:
            drawn = sparse.csr_matrix((weights > 0).astype(float))
            unique = np.asarray(((drawn @ pooled.incidence[n]) > 0).sum(axis=1)).ravel()
            total = n_prompts * (weights @ pooled.grams[n])  # n-grams in the resample
            out[f"distinct_{n}"] = np.where(
                total > 0, unique / np.where(total > 0, total, 1), np.nan
            )
    return out


def statistics(weights: np.ndarray, per: dict[str, Pooled]) -> dict[str, np.ndarray]:
    """decoding:metric -> [k, 1] for each decoding and the paired greedy - sample difference."""
    values = {d: degeneration(weights, pooled) for d, pooled in per.items()}
    out = {f"{d}:{m}": v[:, None] for d, metrics in values.items() for m, v in metrics.items()}
    for m in METRICS:
        out[f"greedy - sample:{m}"] = (values["greedy"][m] - values["sample"][m])[:, None]
    return out


Interval = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(value, ci_low, ci_high), each [L]."""


def distinct_jackknife(per: dict[str, Pooled]) -> dict[str, Interval]:
    """decoding:distinct_n -> (value, ci_low, ci_high), each [1]: the delete-one-prompt
    jackknife's normal interval. A bootstrap resample repeats prompts, and a repeated prompt's
    n-grams count as repeated n-grams, so every replicate of distinct-n sits below the value
    (new prompts would bring new text); leaving a prompt out has no such artefact. With one
    prompt there is no interval (nan ends, written as -inf, +inf)."""
    z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
    values: dict[str, tuple[float, np.ndarray]] = {}
    for d, pooled in per.items():
        for n in DISTINCT:
            inc, grams = pooled.incidence[n], pooled.grams[n]
            shared = np.asarray((inc > 0).sum(axis=0)).ravel()  # prompts holding each n-gram
            own = np.asarray(inc @ (shared == 1).astype(float)).ravel()  # n-grams only in i
            total = grams.sum()
            with np.errstate(invalid="ignore", divide="ignore"):
                full = len(shared) / total if total > 0 else np.nan
                left_out = (len(shared) - own) / (total - grams)  # (n_prompts,)
            values[f"{d}:distinct_{n}"] = (full, left_out)
    for n in DISTINCT:
        g, s_ = values[f"greedy:distinct_{n}"], values[f"sample:distinct_{n}"]
        values[f"greedy - sample:distinct_{n}"] = (g[0] - s_[0], g[1] - s_[1])
    out: dict[str, Interval] = {}
    for name, (full, left_out) in values.items():
        m = len(left_out)
        if m < 2 or not np.isfinite(left_out).all() or np.isnan(full):
            out[name] = (np.array([full]), np.array([np.nan]), np.array([np.nan]))
            continue
        se = math.sqrt((m - 1) / m * float(((left_out - left_out.mean()) ** 2).sum()))
        out[name] = (np.array([full]), np.array([full - z * se]), np.array([full + z * se]))
    return out


def reinforcement_statistics(
    weights: np.ndarray, sr: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """TP, IP, WR and tp_rise = TP[n] - TP[1], each [k, N], under sentence weights [k, n]."""
    out = {q: weights @ sr[q] for q in SR_QUANTITIES}
    out["tp_rise"] = out["tp"] - out["tp"][:, :1]
    return out


def measure_repetition(
    model_dir: str | Path,
    out_dir: str | Path,
    prompts: str | Path | Sequence[str] | None = None,
    sentences: str | Path | Sequence[str] | None = None,
    max_repeats: int = 8,
    max_new_tokens: int = 64,
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "float32",
    prompt_field: str = "prompt",
    progress: bool = False,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict[str, Any]:
    """Measure the model's repetition (module docstring) and write OUT_DIR/measure.json,
    results.parquet, samples.parquet, figures and report.html. `prompts` and `sentences`: a
    file or datasets directory (`irlhf.measure.inputs.load_prompts`) or a list of strings;
    each defaults to the other.

    Every input is checked before anything is computed or written (a one-line
    `MeasureInputError` on the first bad one). Returns the contents of measure.json."""

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MeasureInputError(f"--out {out} is a file; expected a directory (new or existing)")
    check_integers(
        ("--max-repeats", max_repeats, 2), ("--max-new-tokens", max_new_tokens, 1),
        ("--samples", samples, 1), ("--batch-size", batch_size, 1),
        ("--n-bootstrap", n_bootstrap, 1),
    )  # fmt: skip
    setup = prepare(
        model_dir, prompts, sentences, max_repeats, max_new_tokens, device, dtype, prompt_field
    )
    n_prompts, n_sentences = len(setup.prompts.ids), len(setup.sentences)
    total = n_sentences + n_prompts * (1 + samples)
    if progress:
        with _progress_bar(total, "measure repetition") as bar:
            task = bar.add_task("measure", total=total)
            sr = reinforcement(setup, max_repeats, lambda n: bar.advance(task, n))
            kept = continuations(setup, max_new_tokens, samples, seed, batch_size,
                                 lambda n: bar.advance(task, n))  # fmt: skip
    else:
        sr = reinforcement(setup, max_repeats)
        kept = continuations(setup, max_new_tokens, samples, seed, batch_size, None)
    per = {d: pool([r for r in kept if r["decoding"] == d], n_prompts) for d in DECODINGS}
    # point estimates under uniform weights, intervals from resampled sentences / prompts
    point_s = np.full((1, n_sentences), 1 / n_sentences)
    boot_s = bootstrap_weights(n_sentences, n_bootstrap, seed)
    point_p = np.full((1, n_prompts), 1 / n_prompts)
    boot_p = bootstrap_weights(n_prompts, n_bootstrap, seed)
    measured = Measured(
        with_intervals(reinforcement_statistics(point_s, sr), reinforcement_statistics(boot_s, sr)),
        with_intervals(statistics(point_p, per), statistics(boot_p, per)) | distinct_jackknife(per),
        kept,
        METRICS,
    )
    inputs = {
        "model": str(model_dir),
        "prompts": "(the sentences: no --prompts)" if prompts is None
        else str(prompts) if isinstance(prompts, (str, Path)) else "(a list of strings)",
        "sentences": setup.sentence_source,
        "prompt_field": prompt_field,
        "n_prompts": n_prompts,
        "n_sentences": n_sentences,
        "max_repeats": max_repeats,
        "max_new_tokens": max_new_tokens,
        "samples": samples,
        "seed": seed,
        "batch_size": batch_size,
        "device": str(setup.device),
        "dtype": dtype,
        "n_bootstrap": n_bootstrap,
        "confidence": CONFIDENCE,
    }  # fmt: skip
    return write_outputs(out, measured, inputs, setup.sentence_texts)
