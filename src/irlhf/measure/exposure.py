"""`irlhf measure exposure`: Arora et al. 2022's exposure-bias quantities for a user's own model,
with a larger model (the expert) as the oracle.

With the per-step loss l(prefix) = KL(expert(. | prefix) || h(. | prefix)) of a policy h, the
same definitions as `irlhf.metrics.exposure` (Arora et al. 2022, "Why exposure bias matters",
arXiv 2204.01171), for every l = 1..L:

    eps_<=l       = (1/l) sum_{t<=l} E_{prefix ~ expert}[l_t]   (on the expert's own continuations)
    R_<=l         = sum_{t<=l} E_{prefix ~ h}[l_t]              (along h's own continuations)
    AccErr_<=l    = R_<=l / eps_<=l                             (between l and l^2 in theory)
    %ExAccErr_<=l = (R_<=l - l eps_<=l) / (l eps_<=l) * 100

Two policies are measured per decoding (greedy | sample | top-k=K | top-p=P, at a temperature):
h = the decoding itself (its tempered, filtered distribution: the policy that generated the
text; a filter that gives probability 0 to a token the expert emits makes the KL +inf), and
h = the model's own distribution p_theta with contexts from the decoding (`*_model` quantities,
finite for every decoding). The latter is what Arora et al.'s code
(kushalarora/quantifying_exposure_bias) computes when it compares decodings, except that at a
temperature T != 1 it also divides the oracle's logits by T; here the expert is never tempered.
Also the per-step KL curves (eps and R before cumulating) and the NLL-oracle of the
continuations (mean -log expert per token over the first l tokens). Every quantity has a 95%
percentile-bootstrap interval over prompts (the statistic recomputed on prompts drawn with
replacement).

Computation: KV-cached sampling (`CausalLMPolicy.sample`), then one scoring forward per
sequence batch for each model (the logits of every completion position at once), the forwards in
`dtype`, log-softmax in float32 (the logits' own precision) and every sum, over the vocabulary
and over the steps, in float64. Prompts are batched with prompts of the same token length (no
padding, so the numbers are those of each prompt alone). No output holds nan: an
undefined ratio (eps = 0 or +inf) is left out with a note; an infinite KL is +inf with a note.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from irlhf.measure.bootstrap import CONFIDENCE, N_BOOTSTRAP, PerPrompt, summarise
from irlhf.measure.inputs import (
    MeasureInputError,
    Prompts,
    check_pair,
    check_sampling,
    context_length,
    load_model,
    place,
    read_prompt_texts,
    resolve_device,
    resolve_dtype,
    tokenize_prompts,
)
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.policies.sampling import Decoding
from irlhf.types import Sequences

_CHUNK_ELEMENTS = 1 << 22
"""Elements (32 MiB of float64) per [B, positions, V] block of the KL computation."""


@dataclass(frozen=True)
class NamedDecoding:
    """A decoding as the command line names it (`greedy`, `sample`, `top-k=K`, `top-p=P`)."""

    name: str
    decoding: Decoding


def parse_decoding(text: str, temperature: float = 1.0) -> NamedDecoding:
    """greedy | sample | top-k=K | top-p=P (at `temperature`, except greedy)."""
    allowed = "allowed: greedy, sample, top-k=K (K >= 1), top-p=P (0 < P <= 1)"
    head, _, value = text.strip().partition("=")
    try:
        if text == "greedy":
            return NamedDecoding(text, Decoding(greedy=True))
        if text == "sample":
            return NamedDecoding(text, Decoding(temperature))
        if head == "top-k" and value:
            return NamedDecoding(text, Decoding(temperature, top_k=int(value)))
        if head == "top-p" and value:
            return NamedDecoding(text, Decoding(temperature, top_p=float(value)))
    except ValueError as err:
        raise MeasureInputError(f"--decoding {text!r}: {err}; {allowed}") from err
    raise MeasureInputError(f"--decoding {text!r} is unknown; {allowed}")


def policy_log_probs(logits: Tensor, decoding: Decoding) -> Tensor:
    """log h(. | prefix) [..., A] of the policy a decoding draws from, in the logits' dtype: the
    same temperature, top-k and top-p filters as `irlhf.policies.sampling.draw` (filtered
    tokens get -inf), the argmax one-hot for greedy."""
    if decoding.greedy:
        hot = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
        return torch.zeros_like(logits).masked_fill(~hot, -math.inf)
    logits = logits / decoding.temperature
    top_k, top_p = decoding.top_k, decoding.top_p
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), -math.inf)
    return logits.log_softmax(dim=-1)


def kl_from_log_probs(expert: Tensor, policy: Tensor, p: Tensor | None = None) -> Tensor:
    """KL(expert || policy) [...] float64 from log-probs [..., A] (float32 or float64): 0 log 0
    = 0, +inf where the expert has mass the policy lacks, clamped at 0 (round-off).

    Summed as p (log p - log q) term by term, the sum over the vocabulary in float64: close
    distributions give small terms, so no large cross-entropy and entropy cancel (pass the
    expert's probabilities `p` to share them between policies). The rare rows where a term is
    nan (p = 0 where q = 0: 0 * -inf) are recomputed with those terms set to 0."""
    p = expert.exp() if p is None else p
    kl = (p * (expert - policy)).sum(dim=-1, dtype=torch.float64)
    bad = kl.isnan()
    if bool(bad.any()):
        terms = torch.where(p[bad] > 0, p[bad] * (expert[bad] - policy[bad]), 0.0)
        kl[bad] = terms.sum(dim=-1, dtype=torch.float64)
    return kl.clamp_min(0.0)


def _batches(prompts: Prompts, samples: int, batch_size: int) -> list[np.ndarray]:
    """Row batches (prompt indices, each repeated `samples` times), one token length each."""
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts.ids):
        by_length.setdefault(len(ids), []).extend([i] * samples)
    rows = [np.array(r) for _, r in sorted(by_length.items())]
    return [r[s : s + batch_size] for r in rows for s in range(0, len(r), batch_size)]


def _unfiltered(decoding: Decoding) -> bool:
    """Whether a decoding's policy is the model's own distribution (temperature 1, no filter)."""
    return (
        not decoding.greedy
        and decoding.temperature == 1.0
        and decoding.top_k is None
        and (decoding.top_p is None or decoding.top_p >= 1)
        and decoding.epsilon == 0
    )


def _chunks(batch: int, length: int, vocab: int) -> Iterator[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, batch * vocab))
    for start in range(0, length, step):
        yield slice(start, min(length, start + step))


def _score(
    expert: CausalLMPolicy,
    model: CausalLMPolicy,
    seqs: Sequences,
    policies: dict[str, Decoding | None],
) -> dict[str, Tensor]:
    """Per-step values [B, L] float64 along the completion of `seqs`: "nll" (-log expert of each
    token) and "kl:NAME" = KL(expert || h) for each policy (None: the model's own distribution).
    One forward per model, all completion positions at once."""
    P, T = seqs.prompt_length, seqs.length
    with torch.inference_mode():
        expert_logits, _ = expert.action_logits(seqs, P - 1, T - 1)  # (B, L, A)
        model_logits, _ = model.action_logits(seqs, P - 1, T - 1)
    targets = seqs.tokens[:, P:]  # (B, L)
    parts: dict[str, list[Tensor]] = {"nll": [], **{f"kl:{n}": [] for n in policies}}
    B, L, A = expert_logits.shape
    for part in _chunks(B, L, A):
        # log-softmax in float32, the logits' own precision (a float32 forward's logits carry
        # ~1e-7 relative error already), half the memory traffic of float64; every sum over the
        # vocabulary or the steps is in float64
        log_e = expert_logits[:, part].float().log_softmax(dim=-1)  # (B, l, A)
        p = log_e.exp()
        raw = model_logits[:, part].float()
        log_m = raw.log_softmax(dim=-1)
        parts["nll"].append(-log_e.gather(-1, targets[:, part, None]).squeeze(-1).double())
        for name, decoding in policies.items():
            if decoding is None or _unfiltered(decoding):
                log_h = log_m
            else:
                log_h = policy_log_probs(raw, decoding)
            parts[f"kl:{name}"].append(kl_from_log_probs(log_e, log_h, p))
    return {name: torch.cat(values, dim=1) for name, values in parts.items()}


@dataclass(frozen=True)
class Setup:
    """Validated inputs of one measurement (everything checked before anything is computed)."""

    expert: CausalLMPolicy
    model: CausalLMPolicy
    tokenizer: Any
    prompts: Prompts
    decodings: tuple[NamedDecoding, ...]
    device: torch.device
    dtype: torch.dtype


def load_setup(
    expert_dir: str | Path,
    model_dir: str | Path,
    prompts: str | Path | Sequence[str],
    new_tokens: int,
    device: str,
    dtype: str,
    prompt_field: str,
) -> Setup:
    """Device, dtype, prompts, expert and model checked (a one-line MeasureInputError on the
    first bad one) and loaded; every prompt must leave room for `new_tokens` tokens in both
    models' contexts. No decodings (`prepare` adds them)."""
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    texts = read_prompt_texts(prompts, prompt_field)
    expert, expert_tok = load_model(expert_dir, "--expert")
    model, model_tok = load_model(model_dir, "--model")
    check_pair(expert, expert_tok, model, model_tok)
    contexts = [c for c in (context_length(expert), context_length(model)) if c is not None]
    tokenized = tokenize_prompts(
        texts,
        expert_tok,
        min(expert.vocab_size, model.vocab_size),
        min(contexts) if contexts else None,
        new_tokens,
    )
    place((expert, model), torch_device, torch_dtype)
    return Setup(expert, model, expert_tok, tokenized, (), torch_device, torch_dtype)


def prepare(
    expert_dir: str | Path,
    model_dir: str | Path,
    prompts: str | Path | Sequence[str],
    max_new_tokens: int,
    decodings: Sequence[str],
    temperature: float,
    samples: int,
    batch_size: int,
    device: str,
    dtype: str,
    prompt_field: str,
) -> Setup:
    """Check every input (a one-line MeasureInputError on the first bad one) and load it."""
    check_sampling(max_new_tokens, samples, batch_size, temperature)
    if not decodings:
        raise MeasureInputError("--decoding: give at least one (greedy, sample, top-k=K, top-p=P)")
    named = tuple(parse_decoding(d, temperature) for d in dict.fromkeys(decodings))
    setup = load_setup(expert_dir, model_dir, prompts, max_new_tokens, device, dtype, prompt_field)
    return replace(setup, decodings=named)


@dataclass(frozen=True)
class Measured:
    """Raw per-prompt per-step values of one measurement and its samples."""

    expert: PerPrompt
    decodings: dict[str, PerPrompt]
    samples: list[dict[str, Any]]


def run(
    setup: Setup,
    max_new_tokens: int,
    samples: int,
    seed: int,
    batch_size: int,
    progress: Any = None,
) -> Measured:
    """Sample the expert's and each decoding's continuations and score them (module docstring).
    `progress(n)` (optional) is called after each batch of `n` rows. Deterministic given seed:
    the expert and each decoding draw from their own generator, seeded from `seed`."""
    L, n = max_new_tokens, len(setup.prompts.ids)
    policies: dict[str, Decoding | None] = {d.name: d.decoding for d in setup.decodings}
    policies["model"] = None
    expert_rows = PerPrompt(n, L)
    per_decoding = {d.name: PerPrompt(n, L) for d in setup.decodings}
    kept: list[dict[str, Any]] = []
    sources: list[tuple[str, Decoding | None]] = [("expert", None)]
    sources += [(d.name, d.decoding) for d in setup.decodings]
    for source, decoding in sources:
        # one stream per source, from (seed, its name): adding a decoding changes no other's
        state = np.random.SeedSequence([seed, zlib.crc32(source.encode())]).generate_state(1)
        generator = torch.Generator(device=setup.device).manual_seed(int(state[0]))
        n_samples = 1 if decoding is not None and decoding.greedy else samples
        seen: dict[int, int] = {}
        for rows in _batches(setup.prompts, n_samples, batch_size):
            prompt = torch.tensor([setup.prompts.ids[i] for i in rows], device=setup.device)
            if decoding is None:
                seqs = setup.expert.sample(prompt, L, generator)
                scored = policies
            else:
                seqs = setup.model.sample(
                    prompt, L, generator, decoding.temperature, decoding.top_k,
                    decoding.top_p, decoding.greedy,
                )  # fmt: skip
                scored = {source: decoding, "model": None}
            values = _score(setup.expert, setup.model, seqs, scored)
            (expert_rows if decoding is None else per_decoding[source]).add(rows, values)
            completions = seqs.tokens[:, seqs.prompt_length :].cpu().tolist()
            for i, ids in zip(rows.tolist(), completions, strict=True):
                seen[i] = seen.get(i, -1) + 1
                kept.append(
                    {"source": source, "prompt_index": i, "sample": seen[i], "completion_ids": ids}
                )
            if progress is not None:
                progress(len(rows))
    kept.sort(key=lambda r: (r["source"] != "expert", r["source"], r["prompt_index"], r["sample"]))
    for row in kept:
        row["completion"] = setup.tokenizer.decode(row["completion_ids"])
    return Measured(expert_rows, per_decoding, kept)


def total_rows(setup: Setup, samples: int) -> int:
    """Rows `run` samples and scores (for a progress bar)."""
    n = len(setup.prompts.ids)
    return n * samples + sum(n * (1 if d.decoding.greedy else samples) for d in setup.decodings)


# ---- the measurement --------------------------------------------------------------------------


def _progress_bar(total: int, name: str = "measure exposure") -> Any:
    """A rich progress bar on stderr with the time left, labelled `name`."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(name),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def measure_exposure(
    expert_dir: str | Path,
    model_dir: str | Path,
    prompts: str | Path | Sequence[str],
    out_dir: str | Path,
    max_new_tokens: int = 64,
    decodings: Sequence[str] = ("sample",),
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
    """Measure the model's exposure bias against the expert (module docstring) on `prompts` (a
    file or datasets directory, `irlhf.measure.inputs.load_prompts`, or a list of strings) and
    write OUT_DIR/measure.json, results.parquet, samples.parquet, figures and report.html.

    Every input is checked before anything is computed or written (a one-line
    `MeasureInputError` on the first bad one). `samples` continuations per prompt from the
    expert and from each decoding (one for greedy). Returns the contents of measure.json."""
    from irlhf.measure.exposure_report import write_outputs

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MeasureInputError(f"--out {out} is a file; expected a directory (new or existing)")
    setup = prepare(
        expert_dir, model_dir, prompts, max_new_tokens, decodings, temperature, samples,
        batch_size, device, dtype, prompt_field,
    )  # fmt: skip
    if progress:
        with _progress_bar(total_rows(setup, samples)) as bar:
            task = bar.add_task("measure", total=total_rows(setup, samples))
            measured = run(setup, max_new_tokens, samples, seed, batch_size,
                           lambda n: bar.advance(task, n))  # fmt: skip
    else:
        measured = run(setup, max_new_tokens, samples, seed, batch_size)
    table = summarise(measured.expert, measured.decodings, seed, n_bootstrap)
    inputs = {
        "expert": str(expert_dir),
        "model": str(model_dir),
        "prompts": str(prompts) if isinstance(prompts, (str, Path)) else "(a list of strings)",
        "prompt_field": prompt_field,
        "n_prompts": len(setup.prompts.ids),
        "max_new_tokens": max_new_tokens,
        "decodings": [d.name for d in setup.decodings],
        "temperature": temperature,
        "samples": samples,
        "seed": seed,
        "batch_size": batch_size,
        "device": str(setup.device),
        "dtype": dtype,
        "n_bootstrap": n_bootstrap,
        "confidence": CONFIDENCE,
    }
    return write_outputs(out, table, inputs, measured.samples)
