"""`irlhf measure recovery`: He et al. 2021's self-recovery of a user's model after a perturbed
prefix, with a larger model (the expert) as the oracle.

The probe of `irlhf.metrics.recovery` (He et al. 2021, "Exposure bias versus self-recovery",
arXiv 1905.10617) for Hugging Face models. For each prompt x and each of `samples` draws:

1. the expert continues x by `position + k` tokens: the clean prefix c;
2. the perturbed prefix c~ replaces c's tokens position .. position + k - 1 by `"random"`
   tokens (uniform over the tokenizer's ids; as in irlhf.metrics.recovery a draw may equal the
   replaced token, counted in the notes) or `"unlikely"` ones (at each of the k positions the
   token the expert finds least likely after the perturbed prefix so far);
3. the model continues both prefixes by D = `distance` tokens, sampling at temperature 1 with
   common random numbers (the same generator seed for both arms: neither arm's distribution
   changes, their difference gets far less noisy);
4. at each distance d = 1..D (the d-th token the model emits) the per-step
   KL_d = KL(expert(. | x, prefix, y_<d) || model(. | x, prefix, y_<d)) along each arm's own
   continuation y; the excess is perturbed minus clean:
       excess_kl[d] = E[KL_d | c~] - E[KL_d | c]
   (He et al.'s conditional generation deviation after d - 1 generated tokens, relative to the
   undistorted prefix);
5. the perturbation's trace, KL(h(. | x, c, y_<d) || h(. | x, c~, y_<d)) along the perturbed
   arm's continuation y of h: for h = the model (`trace_model`) and for h = the expert
   continuing c~ itself (`trace_expert`, the reference: a language model keeps the
   perturbation in its context, and how fast the expert forgets it bounds what recovery can
   mean).

Means are over samples per prompt, then over prompts; every curve has a 95% percentile-bootstrap
interval over prompts (`irlhf.measure.bootstrap`). The recovery half-life of a curve is
`irlhf.metrics.recovery.half_life` (first d with curve[d] < curve[1] / 2, +inf if none within
D), its interval from the same bootstrap replicates (`half_life_interval`). Forwards in
`dtype`, log-softmax and KL in float64. No output holds nan: an excess of inf - inf is left out
with a note, an infinite KL is +-inf with a note, an undefined half-life is left out with a note.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from irlhf.measure.bootstrap import (
    CONFIDENCE,
    N_BOOTSTRAP,
    PerPrompt,
    bootstrap_weights,
    weighted_mean,
    with_intervals,
)
from irlhf.measure.exposure import (
    Setup,
    _batches,
    _chunks,
    _progress_bar,
    kl_from_log_probs,
    load_setup,
)
from irlhf.measure.exposure_report import _ranges
from irlhf.measure.inputs import MeasureInputError, check_integers
from irlhf.measure.recovery_report import Summary, write_outputs
from irlhf.metrics.recovery import PERTURBATIONS, HalfLife, half_life_interval
from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Sequences

ARMS = ("kl_perturbed", "kl_clean", "trace_model", "trace_expert")
"""Per-step values [B, D] measured per row (module docstring)."""


def _generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    """One random stream per purpose, from (seed, its name)."""
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)
    return torch.Generator(device=device).manual_seed(int(state[0]))


def _seqs(tokens: Tensor, prefix_length: int) -> Sequences:
    return Sequences.from_prompt_and_completion(
        tokens[:, :prefix_length], tokens[:, prefix_length:]
    )


def perturb(
    expert: CausalLMPolicy,
    clean: Tensor,
    prompt_length: int,
    start: int,
    k: int,
    perturbation: str,
    n_tokens: int,
    generator: torch.Generator,
) -> Tensor:
    """[B, T] `clean` with tokens start .. start + k - 1 replaced: uniform draws from the first
    `n_tokens` ids ("random") or, one position at a time, the expert's least likely next token
    after the perturbed tokens so far ("unlikely")."""
    tokens = clean.clone()
    B = len(tokens)
    if perturbation == "random":
        tokens[:, start : start + k] = torch.randint(
            n_tokens, (B, k), generator=generator, device=generator.device
        )
        return tokens
    for j in range(start, start + k):
        with torch.inference_mode():
            so_far = _seqs(tokens[:, :j], prompt_length)
            logits, _ = expert.action_logits(so_far, j - 1, j)  # (B, 1, A)
        tokens[:, j] = logits[:, 0, :n_tokens].argmin(dim=-1)
    return tokens


def _continuation_logits(policy: CausalLMPolicy, tokens: Tensor, prefix_length: int) -> Tensor:
    """(B, D, A) the logits that predict tokens prefix_length .. T - 1 of `tokens` [B, T]."""
    T = tokens.shape[1]
    with torch.inference_mode():
        logits, _ = policy.action_logits(_seqs(tokens, prefix_length), prefix_length - 1, T - 1)
    return logits


def _kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """[B, D] float64 KL(softmax p || softmax q) per position, in float64 chunks."""
    B, D, A = p_logits.shape
    parts = []
    for part in _chunks(B, D, A):
        log_p = p_logits[:, part].double().log_softmax(dim=-1)
        parts.append(kl_from_log_probs(log_p, q_logits[:, part].double().log_softmax(dim=-1)))
    return torch.cat(parts, dim=1)


def _swap(prefix: Tensor, continued: Tensor) -> Tensor:
    """`continued` [B, T] with its first prefix.shape[1] tokens replaced by `prefix`."""
    tokens = continued.clone()
    tokens[:, : prefix.shape[1]] = prefix
    return tokens


@dataclass(frozen=True)
class Probe:
    """What `run` measured: per-prompt per-distance values (`ARMS`), the rows' tokens, and how
    many random perturbations left every token unchanged."""

    values: PerPrompt
    samples: list[dict[str, Any]]
    unchanged: int


def run(
    setup: Setup,
    position: int,
    k: int,
    distance: int,
    perturbation: str,
    samples: int,
    seed: int,
    batch_size: int,
    progress: Any = None,
) -> Probe:
    """The probe of the module docstring on every prompt, `samples` times. Deterministic given
    seed: one stream each for the expert's prefixes, the perturbations (which also draws each
    batch's common seed of the model's two arms) and the expert's own continuations.
    `progress(n)` (optional) is called after each batch of `n` rows."""
    expert, model, device = setup.expert, setup.model, setup.device
    n_tokens = min(expert.action_vocab_size, len(setup.tokenizer))
    streams = {name: _generator(seed, name, device) for name in ("prefix", "perturb", "expert")}
    values = PerPrompt(len(setup.prompts.ids), distance)
    kept: list[dict[str, Any]] = []
    seen: dict[int, int] = {}
    unchanged = 0
    for rows in _batches(setup.prompts, samples, batch_size):
        prompt = torch.tensor([setup.prompts.ids[i] for i in rows], device=device)  # (B, P)
        P, Q = prompt.shape[1], prompt.shape[1] + position + k  # Q: prompt + prefix length
        clean = expert.sample(prompt, position + k, streams["prefix"]).tokens  # (B, Q)
        perturbed = perturb(
            expert, clean, P, P + position, k, perturbation, n_tokens, streams["perturb"]
        )
        unchanged += int((perturbed == clean).all(dim=1).sum())
        # common random numbers: both arms of the model draw from generators seeded alike
        crn = int(torch.randint(2**62, (1,), generator=streams["perturb"], device=device))
        arms = {
            name: model.sample(
                prefix, distance, torch.Generator(device=device).manual_seed(crn)
            ).tokens
            for name, prefix in (("perturbed", perturbed), ("clean", clean))
        }  # each (B, Q + D)
        by_expert = expert.sample(perturbed, distance, streams["expert"]).tokens
        model_on_perturbed = _continuation_logits(model, arms["perturbed"], Q)
        measured = {
            "kl_perturbed": _kl(
                _continuation_logits(expert, arms["perturbed"], Q), model_on_perturbed
            ),
            "kl_clean": _kl(
                _continuation_logits(expert, arms["clean"], Q),
                _continuation_logits(model, arms["clean"], Q),
            ),
            "trace_model": _kl(
                _continuation_logits(model, _swap(clean, arms["perturbed"]), Q), model_on_perturbed
            ),
            "trace_expert": _kl(
                _continuation_logits(expert, _swap(clean, by_expert), Q),
                _continuation_logits(expert, by_expert, Q),
            ),
        }
        values.add(rows, measured)
        for j, i in enumerate(rows.tolist()):
            seen[i] = seen.get(i, -1) + 1
            kept.append({
                "prompt_index": i, "sample": seen[i],
                "prefix_ids": clean[j, P:].tolist(),
                "perturbed_ids": perturbed[j, P:].tolist(),
                "model_perturbed_ids": arms["perturbed"][j, Q:].tolist(),
                "model_clean_ids": arms["clean"][j, Q:].tolist(),
                "expert_perturbed_ids": by_expert[j, Q:].tolist(),
            })  # fmt: skip
        if progress is not None:
            progress(len(rows))
    kept.sort(key=lambda r: (r["prompt_index"], r["sample"]))
    for row in kept:
        for name in ("prefix", "perturbed", "model_perturbed", "model_clean", "expert_perturbed"):
            row[name] = setup.tokenizer.decode(row[f"{name}_ids"])
    return Probe(values, kept, unchanged)


# ---- statistics -------------------------------------------------------------------------------


def statistics(weights: np.ndarray, values: PerPrompt) -> dict[str, np.ndarray]:
    """Every curve [k, D] under prompt weights [k, n] (rows summing to 1): the arms' mean KLs
    and traces, excess_kl = perturbed - clean (nan where both are +inf), excess_kl_relative =
    excess_kl / excess_kl[d = 1] (nan unless excess_kl[1] is finite and > 0), and for
    c = excess_kl, trace_model, trace_expert: c_below_half = c[1] / 2 - c[d] (> 0 once c has
    fallen below half its d = 1 value)."""
    out = {name: weighted_mean(weights, values.means(name)) for name in ARMS}
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = out["kl_perturbed"] - out["kl_clean"]  # inf - inf = nan: undefined
        first = excess[:, :1]
        usable = np.isfinite(first) & (first > 0)
        out["excess_kl"] = excess
        out["excess_kl_relative"] = np.where(usable, excess / np.where(usable, first, 1.0), np.nan)
        for name in ("excess_kl", "trace_model", "trace_expert"):
            out[f"{name}_below_half"] = out[name][:, :1] / 2 - out[name]
    return out


def summarise(values: PerPrompt, seed: int, n_boot: int = N_BOOTSTRAP) -> Summary:
    """Point curves (uniform prompt weights), their bootstrap intervals over prompts and the
    half-lives from the same replicates."""
    n = values.n_prompts
    point = statistics(np.full((1, n), 1.0 / n), values)
    boot = statistics(bootstrap_weights(n, n_boot, seed), values)
    curves = with_intervals(point, boot)
    notes: list[str] = []
    distances = np.arange(1, values.length + 1)
    for name, what in (("kl_perturbed", "perturbed"), ("kl_clean", "clean")):
        infinite = np.isinf(point[name][0])
        if infinite.any():
            notes.append(
                f"KL(expert || model) on the {what} arm is +inf at d = "
                f"{_ranges(distances[infinite])}: the model gives probability 0 to a token the "
                "expert can emit"
            )
    undefined = np.isnan(point["excess_kl"][0])
    if undefined.any():
        notes.append(
            f"excess_kl is left out at d = {_ranges(distances[undefined])}: both arms' KL is "
            "+inf there (inf - inf)"
        )
    half_lives: dict[str, HalfLife | None] = {}
    for name in ("excess_kl", "trace_model", "trace_expert"):
        curve = point[name][0]
        if not np.isfinite(curve).all():
            half_lives[name] = None
            notes.append(f"no half-life of {name}: the curve is infinite or undefined somewhere")
        elif not curve[0] > 0:
            half_lives[name] = None
            notes.append(
                f"no half-life of {name}: its value at d = 1 is {curve[0]:.3g} <= 0 (nothing to "
                "recover from)"
            )
        else:
            h = half_life_interval(curve, boot[name], CONFIDENCE)
            half_lives[name] = h
            if h.value == np.inf:
                notes.append(
                    f"{name} never falls below half its d = 1 value within D = {values.length}: "
                    "half-life +inf (a larger --distance may resolve it)"
                )
            if h.undefined_resamples:
                notes.append(
                    f"{h.undefined_resamples} of {n_boot} bootstrap resamples have {name} <= 0 at "
                    "d = 1 and are left out of its half-life interval"
                )
    return Summary(curves, half_lives, notes)


def measure_recovery(
    expert_dir: str | Path,
    model_dir: str | Path,
    prompts: str | Path | Sequence[str],
    out_dir: str | Path,
    position: int = 16,
    k: int = 1,
    distance: int = 16,
    perturbation: str = "random",
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "float32",
    prompt_field: str = "prompt",
    progress: bool = False,
    n_bootstrap: int = N_BOOTSTRAP,
) -> dict[str, Any]:
    """Measure the model's self-recovery against the expert (module docstring) on `prompts` (a
    file or datasets directory, `irlhf.measure.inputs.load_prompts`, or a list of strings):
    perturb k tokens after `position` expert tokens, continue `distance` tokens, and write
    OUT_DIR/measure.json, results.parquet, samples.parquet, figures and report.html.

    Every input is checked before anything is computed or written (a one-line
    `MeasureInputError` on the first bad one). Returns the contents of measure.json."""

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MeasureInputError(f"--out {out} is a file; expected a directory (new or existing)")
    check_integers(
        ("--position", position, 0), ("--k", k, 1), ("--distance", distance, 1),
        ("--samples", samples, 1), ("--batch-size", batch_size, 1),
        ("--n-bootstrap", n_bootstrap, 1),
    )  # fmt: skip
    if perturbation not in PERTURBATIONS:
        raise MeasureInputError(
            f"--perturbation must be one of {', '.join(PERTURBATIONS)} (got {perturbation!r})"
        )
    new_tokens = position + k + distance
    setup = load_setup(expert_dir, model_dir, prompts, new_tokens, device, dtype, prompt_field)
    args = (setup, position, k, distance, perturbation, samples, seed, batch_size)
    total = len(setup.prompts.ids) * samples
    if progress:
        with _progress_bar(total, "measure recovery") as bar:
            task = bar.add_task("measure", total=total)
            probe = run(*args, lambda n: bar.advance(task, n))
    else:
        probe = run(*args)
    summary = summarise(probe.values, seed, n_bootstrap)
    if perturbation == "random" and probe.unchanged:
        summary.notes.append(
            f"{probe.unchanged} of {total} random perturbations drew the replaced tokens "
            "themselves (no perturbation; kept, as in irlhf.metrics.recovery)"
        )
    inputs = {
        "expert": str(expert_dir),
        "model": str(model_dir),
        "prompts": str(prompts) if isinstance(prompts, (str, Path)) else "(a list of strings)",
        "prompt_field": prompt_field,
        "n_prompts": len(setup.prompts.ids),
        "position": position,
        "k": k,
        "distance": distance,
        "perturbation": perturbation,
        "samples": samples,
        "seed": seed,
        "batch_size": batch_size,
        "device": str(setup.device),
        "dtype": dtype,
        "n_bootstrap": n_bootstrap,
        "confidence": CONFIDENCE,
    }
    return write_outputs(out, summary, inputs, probe.samples)
