"""`irlhf measure ...`: irlhf's metrics for a researcher's own Hugging Face models (the commands
of `irlhf.measure`; each a thin layer: bad input is one line on stderr and exit code 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from irlhf.cli_output import fail as _fail
from irlhf.cli_output import say as _say

measure_app = typer.Typer(
    help="Measure irlhf's metrics for your own Hugging Face models (an expert and a model).",
    no_args_is_help=True,
)

ModelDir = Annotated[Path, typer.Option(help="A Hugging Face causal LM directory (safetensors).")]
ExpertDir = Annotated[
    Path, typer.Option(help="The expert (oracle): a causal LM directory with its tokenizer.")
]
OutDir = Annotated[Path, typer.Option(help="Output directory.")]
PromptsFile = Annotated[
    Path,
    typer.Option(
        help="Prompts: .txt (one per line), .jsonl / .json (objects with --prompt-field), "
        ".parquet, or a datasets directory (save_to_disk)."
    ),
]
Seed = Annotated[int, typer.Option(help="Seed: the same seed gives the same numbers.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Sequences per batch.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
Dtype = Annotated[str, typer.Option(help="float32, bfloat16 or float16 for the forward passes.")]
PromptField = Annotated[
    str, typer.Option("--prompt-field", help="The prompt field of .jsonl/.json/.parquet.")
]


def _measure(out: Path, function: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> None:
    """Run one measure function (writing into `out`); print its finding and where it wrote.
    Bad input: one line on stderr, exit code 2."""
    from irlhf.measure import MeasureInputError

    try:
        result = function(*args, **kwargs)
    except MeasureInputError as err:
        _fail(str(err))
    _say(result["finding"])
    _say(f"wrote {out}")


@measure_app.command()
def exposure(
    expert: ExpertDir,
    model: ModelDir,
    prompts: PromptsFile,
    out: OutDir,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Continuation length L (tokens).")
    ] = 64,
    decoding: Annotated[
        list[str] | None,
        typer.Option(
            "--decoding",
            help="greedy, sample, top-k=K or top-p=P; repeat it to compare decodings "
            "(default: sample).",
        ),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature of the model's decodings.")
    ] = 1.0,
    samples: Annotated[int, typer.Option(help="Continuations per prompt and decoding.")] = 1,
    seed: Seed = 0,
    batch_size: BatchSize = 32,
    device: Device = "auto",
    dtype: Dtype = "float32",
    prompt_field: PromptField = "prompt",
) -> None:
    """Exposure bias (Arora et al. 2022) of MODEL with EXPERT as the oracle: eps, R, AccErr and
    %ExAccErr for every continuation length l <= L, with bootstrap intervals over prompts; writes
    OUT/measure.json, results.parquet, samples.parquet, figures and report.html."""
    from irlhf.measure import measure_exposure

    _measure(
        out, measure_exposure,
        expert, model, prompts, out, max_new_tokens, tuple(decoding or ("sample",)),
        temperature, samples, seed, batch_size, device, dtype, prompt_field, progress=True,
    )  # fmt: skip


@measure_app.command()
def recovery(
    expert: ExpertDir,
    model: ModelDir,
    prompts: PromptsFile,
    out: OutDir,
    position: Annotated[
        int, typer.Option(help="Expert tokens before the perturbation (position t).")
    ] = 16,
    k: Annotated[int, typer.Option("--k", help="Tokens replaced by the perturbation.")] = 1,
    distance: Annotated[
        int, typer.Option(help="D: tokens the model continues after the perturbation.")
    ] = 16,
    perturbation: Annotated[
        str,
        typer.Option(help="random (uniform tokens) or unlikely (the expert's least likely)."),
    ] = "random",
    samples: Annotated[int, typer.Option(help="Perturbed prefixes per prompt.")] = 1,
    seed: Seed = 0,
    batch_size: BatchSize = 32,
    device: Device = "auto",
    dtype: Dtype = "float32",
    prompt_field: PromptField = "prompt",
) -> None:
    """Self-recovery (He et al. 2021) of MODEL with EXPERT as the oracle: replace k tokens of an
    expert prefix, let MODEL continue, and measure the excess KL(expert || model) at each
    distance d = 1..D with bootstrap intervals over prompts and its half-life; writes
    OUT/measure.json, results.parquet, samples.parquet, figures and report.html."""
    from irlhf.measure import measure_recovery

    _measure(
        out, measure_recovery,
        expert, model, prompts, out, position, k, distance, perturbation, samples, seed,
        batch_size, device, dtype, prompt_field, progress=True,
    )  # fmt: skip


@measure_app.command()
def repetition(
    model: ModelDir,
    out: OutDir,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="Prompts to continue (formats as in `measure exposure`; default: the sentences)."
        ),
    ] = None,
    sentences: Annotated[
        Path | None,
        typer.Option(
            help="Sentences to repeat: one per line (.txt) or the prompt formats (default: the "
            "prompts themselves)."
        ),
    ] = None,
    max_repeats: Annotated[
        int, typer.Option("--max-repeats", help="N: repeats n = 1..N of each sentence.")
    ] = 8,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Continuation length (tokens).")
    ] = 64,
    samples: Annotated[int, typer.Option(help="Sampled continuations per prompt.")] = 1,
    seed: Seed = 0,
    batch_size: BatchSize = 32,
    device: Device = "auto",
    dtype: Dtype = "float32",
    prompt_field: PromptField = "prompt",
) -> None:
    """Repetition in MODEL: self-reinforcement (Xu et al. 2022: TP, IP, WR of a sentence repeated
    n = 1..N times) and the degeneration of its greedy and sampled continuations (loop rate,
    soft loop rate, seq-rep-n, rep-1, distinct-n), with bootstrap intervals; writes
    OUT/measure.json, results.parquet, samples.parquet, figures and report.html."""
    from irlhf.measure import measure_repetition

    _measure(
        out, measure_repetition,
        model, out, prompts, sentences, max_repeats, max_new_tokens, samples, seed,
        batch_size, device, dtype, prompt_field, progress=True,
    )  # fmt: skip


@measure_app.command()
def rewards(
    reward: Annotated[
        Path,
        typer.Option(
            help="The reward model: a Hugging Face sequence classifier with one label "
            "(config.json, safetensors, tokenizer) or an irlhf reward model directory "
            "(NeuralRewardModel.save)."
        ),
    ],
    models: Annotated[
        list[Path],
        typer.Option(
            "--models",
            help="A causal LM directory (safetensors, tokenizer); repeat it for each model, "
            "the first is the baseline the others are compared with.",
        ),
    ],
    prompts: PromptsFile,
    out: OutDir,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Continuation length (tokens).")
    ] = 64,
    decoding: Annotated[
        str, typer.Option(help="greedy, sample, top-k=K or top-p=P (every model alike).")
    ] = "sample",
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    samples: Annotated[int, typer.Option(help="Continuations per prompt and model.")] = 1,
    seed: Annotated[
        int, typer.Option(help="Seed, shared by every model: the same seed gives the same numbers.")
    ] = 0,
    batch_size: BatchSize = 32,
    device: Device = "auto",
    dtype: Dtype = "float32",
    prompt_field: PromptField = "prompt",
) -> None:
    """Reward-model scores of each model's continuations (the Llama 2 Figure 20 analogue):
    overlaid histograms and KDEs, means and quantiles with bootstrap intervals over prompts, and
    win rates between models; writes OUT/measure.json, results.parquet, samples.parquet, figures
    and report.html."""
    from irlhf.measure import measure_rewards

    _measure(
        out, measure_rewards,
        reward, models, prompts, out, max_new_tokens, decoding, temperature, samples, seed,
        batch_size, device, dtype, prompt_field, progress=True,
    )  # fmt: skip


@measure_app.command()
def example(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("measure-example"),
    seed: Annotated[int, typer.Option(help="Seed of the students' data and training.")] = 0,
) -> None:
    """Models to try the measure commands on, in about a minute: irlhf's Shakespeare teacher
    (trained once, cached), OUT/student (a 2 x 64 student, SFT on the teacher's samples),
    OUT/rlhf (it after one RLHF round), OUT/reward (that round's reward model) and
    OUT/prompts.txt (held-out prompts); prints the four commands to run on them."""
    from irlhf.measure.example import teacher_and_students

    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file; expected a directory (new or existing)")
    models = teacher_and_students(out, seed=seed)
    _say(f"wrote {out} in {models.seconds:.0f} s; the teacher is {models.teacher}")
    e, s, r = models.teacher, models.student, models.rlhf
    p, w = models.prompts, models.reward
    for line in (
        f"irlhf measure exposure --expert {e} --model {s} --prompts {p} --out {out}/exposure",
        f"irlhf measure recovery --expert {e} --model {s} --prompts {p} --out {out}/recovery",
        f"irlhf measure repetition --model {s} --prompts {p} --max-repeats 6 "
        f"--out {out}/repetition",
        f"irlhf measure rewards --reward {w} --models {s} --models {r} --prompts {p} "
        f"--out {out}/rewards",
    ):
        _say(line)
