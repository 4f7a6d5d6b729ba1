"""The `irlhf` command: run experiments, sweeps and studies, write the report, reproduce it all.

    irlhf run CONFIG.toml [--root DIR]
    irlhf sweep CONFIG.toml [--root DIR] [--executor local|ray|inline] [--address HOST:PORT]
    irlhf study NAME --profile quick|default|full [--world automaton|oracle|text]
                [--only KEY=VALUE[,VALUE] ...] --out DIR
    irlhf report DIR... --out report.html
    irlhf reproduce [--profile default] [--world W] [--out results]
    irlhf worlds
    irlhf measure exposure --expert DIR --model DIR --prompts FILE --out DIR
                [--max-new-tokens L] [--decoding greedy|sample|top-k=K|top-p=P ...]
    irlhf measure recovery --expert DIR --model DIR --prompts FILE --out DIR
    irlhf measure repetition --model DIR --out DIR [--prompts FILE] [--sentences FILE]
    irlhf measure rewards --reward DIR --models DIR [--models DIR ...] --prompts FILE --out DIR
    irlhf measure example [--out DIR]   (a teacher, students and a reward model to try them on)

Bad input (a missing file, an invalid config, an unknown study, profile, world or executor) is
reported as one line, ``error: <file>: <field>: <allowed values> (got ...)``, with exit code 2 and
nothing written. A run or study that fails while running exits with code 1. Heavy modules (torch,
the science code) are imported only by the commands that need them, so `--help` is quick.
Commands that read configs import `irlhf.kinds`, whose import registers every experiment kind.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from irlhf.experiments.errors import ConfigError

app = typer.Typer(
    name="irlhf",
    help="Why do we need RLHF? Run the experiments, sweeps and studies that measure it, "
    "and write the report.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()

EXECUTOR_HELP = (
    "Where runs execute: local (a process pool), ray (Ray tasks) or inline (this process)."
)
Root = Annotated[Path, typer.Option("--root", help="Directory of the run directories.")]
Executor = Annotated[str, typer.Option("--executor", help=EXECUTOR_HELP)]
Address = Annotated[
    str | None,
    typer.Option("--address", help="Ray cluster address HOST:PORT (default: a local Ray)."),
]
Workers = Annotated[
    int | None, typer.Option("--workers", help="Parallel runs (default: the number of CPUs).")
]
Profile = Annotated[
    str,
    typer.Option("--profile", help="Grid size: quick (smoke), default (the report) or full."),
]
World = Annotated[
    str | None,
    typer.Option(
        "--world",
        help="The world: automaton (exact, tabular), oracle (a random LM as expert) or text "
        "(a Shakespeare teacher). Default: each study's own (`irlhf studies` lists them).",
    ),
]

Only = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="Run only the part of the grid whose flattened config has KEY equal to one of the "
        "VALUEs, e.g. --only policy.kind=tabular or --only seed=0,1; repeat it for more keys "
        "(all must hold; a repeated KEY adds VALUEs). The runs land in the same cache as the "
        "whole grid's; the summary, table and figures are made from the selected runs only.",
        metavar="KEY=VALUE[,VALUE]",
    ),
]

Teacher = Annotated[
    Path | None,
    typer.Option(
        "--teacher",
        help="A local Hugging Face causal LM directory (with its tokenizer) to use as the "
        "teacher of every text-world run (default: irlhf's own Shakespeare teacher).",
    ),
]


def _say(text: str) -> None:
    """A plain message line (no wrapping of long paths, no rich markup in them)."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Bad input becomes one line on stderr and exit code 2."""
    try:
        yield
    except ConfigError as err:
        _fail(str(err))


def _register_kinds() -> None:
    """Import the experiment kinds (importing `irlhf.kinds` registers them all)."""
    import irlhf.kinds  # noqa: F401


def _parse_only(options: list[str] | None) -> dict[str, list[str]]:
    """--only KEY=VALUE[,VALUE] options as KEY -> VALUEs (a ConfigError if malformed)."""
    only: dict[str, list[str]] = {}
    for option in options or []:
        key, sep, values = option.partition("=")
        parts = [v.strip() for v in values.split(",")]
        if not sep or not key.strip() or not all(parts):
            raise ConfigError("--only", f"must be KEY=VALUE[,VALUE] (got {option!r})")
        only.setdefault(key.strip(), []).extend(parts)
    return only


def _records_table(records: list[dict], title: str, limit: int = 30) -> Table:
    table = Table(title=title)
    columns = list(dict.fromkeys(k for r in records for k in r))
    for column in columns:
        table.add_column(column, justify="right" if column == "value" else "left")
    for record in records[:limit]:
        table.add_row(*(_short(record.get(c)) for c in columns))
    if len(records) > limit:
        table.caption = f"... {len(records) - limit} more rows"
    return table


def _short(value: object) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment config (TOML) with a `kind`.")],
    root: Root = Path("runs"),
) -> None:
    """Run one experiment (resuming it if it was interrupted; instant if it already finished)."""
    from irlhf.experiments import load_config, run_one
    from irlhf.experiments.registry import kind_of

    _register_kinds()
    with _user_errors():
        cfg = load_config(config)
    kind = kind_of(cfg).name
    with Console(stderr=True).status(f"running {kind}"):
        result = run_one(cfg, root)
    _say(f"run {result.run_dir}" + (" (finished earlier)" if result.skipped else ""))
    if result.status != "done":
        _fail(f"run failed: {result.error} (see {result.run_dir / 'traceback.txt'})", code=1)
    console.print(_records_table(result.records, f"{kind} · {result.seconds:.1f} s"))


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Config (TOML) with a \\[sweep] table.")],
    root: Root = Path("runs"),
    executor: Executor = "local",
    address: Address = None,
    workers: Workers = None,
    results: Annotated[
        Path | None,
        typer.Option(help="Where to write the results table (default ROOT/<config name>.parquet)."),
    ] = None,
) -> None:
    """Run every point of a sweep grid (finished points are skipped) and write the table."""
    from irlhf.experiments import load_sweep, run_sweep, write_results
    from irlhf.experiments.sweep import check_executor

    _register_kinds()
    with _user_errors():
        check_executor(executor, address, workers)
        configs = load_sweep(config)
    table = run_sweep(configs, root, executor, address, workers)
    out = results or root / f"{config.stem}.parquet"
    write_results(table, out)
    runs = table.drop_duplicates("run_id")
    failed = runs[runs["status"] != "done"]
    _say(f"{len(runs)} runs, {len(failed)} failed; results: {out}")
    for row in failed.itertuples():
        typer.echo(f"failed {row.run_id}: {row.error}", err=True)
    if len(failed):
        raise typer.Exit(1)


def _load_studies() -> None:
    from irlhf.studies import load_studies

    _register_kinds()
    load_studies()


def _study_dir(name: str, world: str | None) -> str:
    """NAME in the study's default world, NAME-WORLD elsewhere (so they do not overwrite)."""
    from irlhf.studies.base import get_study

    default = world is None or get_study(name).worlds[:1] == (world,)
    return name if default else f"{name}-{world}"


@app.command()
def study(
    name: Annotated[str, typer.Argument(help="Study name (`irlhf studies` lists them).")],
    profile: Profile = "default",
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default results/NAME).")
    ] = None,
    executor: Executor = "local",
    address: Address = None,
    workers: Workers = None,
    world: World = None,
    teacher: Teacher = None,
    only: Only = None,
) -> None:
    """Run one study's grid (or, with --only, part of it) and write its table, summary and
    figures into OUT (default results/NAME, or results/NAME-WORLD outside the study's default
    world). With --only the summary is made from the selected runs only."""
    from irlhf.studies.base import check_world, get_study, run_study

    _load_studies()
    with _user_errors():
        check_world(get_study(name), world)
        selection = _parse_only(only)
        out = out or Path("results") / _study_dir(name, world)
        summary = run_study(
            name, profile, out, executor, address, True, workers, world, teacher, selection,
            raise_errors=not selection,
        )  # fmt: skip
    if "error" in summary:  # a part of the grid the summary cannot be made from
        _fail(f"study {name}: {summary['error']} (runs are in {out / 'runs'})", code=1)
    headline = summary.get("headline")
    if isinstance(headline, list) and headline:
        console.print(_records_table(headline, f"{name}: headline"))
    _say(f"wrote {out}")


@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(help="Study directories (from `irlhf study`).")],
    out: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
) -> None:
    """Write one self-contained HTML page (figures embedded) for the study directories."""
    from irlhf.report import write_report

    with _user_errors():
        write_report(dirs, out)
    _say(f"wrote {out}")


@app.command()
def reproduce(
    profile: Profile = "default",
    out: Annotated[
        Path, typer.Option(help="Output directory (one subdirectory per study).")
    ] = Path("results"),
    executor: Executor = "local",
    address: Address = None,
    workers: Workers = None,
    world: World = None,
) -> None:
    """Run every registered study (all their runs in one pool) in each of its reproduce worlds
    (its default world and, for some, more: `irlhf studies` lists them) and write
    OUT/report.html; with --world, only the studies that run in that world, in it
    (OUT/NAME-WORLD outside a study's default world)."""
    from irlhf.report import write_report
    from irlhf.studies.base import STUDIES, run_studies

    start = time.perf_counter()
    _load_studies()
    if not STUDIES:
        _fail("study: none registered (irlhf.studies.STUDY_MODULES is empty)")
    names = [n for n, s in STUDIES.items() if world is None or world in s.worlds]
    if not names:
        worlds = sorted({w for s in STUDIES.values() for w in s.worlds})
        _fail(f"--world: no study runs in it; worlds: {', '.join(worlds)} (got {world!r})")
    targets: dict = {}
    for name in names:
        for w in (world,) if world is not None else STUDIES[name].reproduce_worlds or (None,):
            targets[(name, w)] = out / _study_dir(name, w)
    with _user_errors():
        summaries = run_studies(targets, profile, executor, address, workers, raise_errors=False)
    page = write_report(list(targets.values()), out / "report.html")
    minutes, seconds = divmod(time.perf_counter() - start, 60)
    _say(f"wrote {page} in {int(minutes)} min {seconds:.0f} s (profile {profile})")
    errors = {target.name: s["error"] for target, s in zip(targets.values(), summaries.values(),
              strict=True) if "error" in s}  # fmt: skip
    for name, error in errors.items():
        typer.echo(f"study {name}: {error}", err=True)
    if errors:
        raise typer.Exit(1)


@app.command()
def studies() -> None:
    """List the registered studies."""
    from irlhf.studies.base import STUDIES

    _load_studies()
    table = Table(title="studies")
    table.add_column("name")
    table.add_column("title")
    table.add_column("--world (default first)")
    table.add_column("irlhf reproduce runs")
    for item in STUDIES.values():
        default = item.worlds[:1] or ("fixed",)
        table.add_row(
            item.name,
            item.title,
            ", ".join(item.worlds) or "fixed",
            ", ".join(item.reproduce_worlds or default),
        )
    if not STUDIES:
        _say("no studies registered yet")
        return
    console.print(table)


@app.command()
def worlds() -> None:
    """List the world presets."""
    try:
        from irlhf.worlds import describe_presets
    except ImportError:
        _say("no worlds registered yet")
        return
    console.print(describe_presets())


measure_app = typer.Typer(
    help="Measure irlhf's metrics for your own Hugging Face models (an expert and a model).",
    no_args_is_help=True,
)
app.add_typer(measure_app, name="measure")

ModelDir = Annotated[Path, typer.Option(help="A Hugging Face causal LM directory (safetensors).")]


@measure_app.command()
def exposure(
    expert: Annotated[
        Path, typer.Option(help="The expert (oracle): a causal LM directory with its tokenizer.")
    ],
    model: ModelDir,
    prompts: Annotated[
        Path,
        typer.Option(
            help="Prompts: .txt (one per line), .jsonl / .json (objects with --prompt-field), "
            ".parquet, or a datasets directory (save_to_disk)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output directory.")],
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
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same numbers.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="float32, bfloat16 or float16 for the forward passes.")
    ] = "float32",
    prompt_field: Annotated[
        str, typer.Option("--prompt-field", help="The prompt field of .jsonl/.json/.parquet.")
    ] = "prompt",
) -> None:
    """Exposure bias (Arora et al. 2022) of MODEL with EXPERT as the oracle: eps, R, AccErr and
    %ExAccErr for every continuation length l <= L, with bootstrap intervals over prompts; writes
    OUT/measure.json, results.parquet, samples.parquet, figures and report.html."""
    from irlhf.measure import MeasureInputError, measure_exposure

    try:
        result = measure_exposure(
            expert, model, prompts, out, max_new_tokens, tuple(decoding or ("sample",)),
            temperature, samples, seed, batch_size, device, dtype, prompt_field, progress=True,
        )  # fmt: skip
    except MeasureInputError as err:
        _fail(str(err))
    _say(result["finding"])
    _say(f"wrote {out}")


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


@measure_app.command()
def recovery(
    expert: Annotated[
        Path, typer.Option(help="The expert (oracle): a causal LM directory with its tokenizer.")
    ],
    model: ModelDir,
    prompts: PromptsFile,
    out: Annotated[Path, typer.Option(help="Output directory.")],
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
    from irlhf.measure import MeasureInputError, measure_recovery

    try:
        result = measure_recovery(
            expert, model, prompts, out, position, k, distance, perturbation, samples, seed,
            batch_size, device, dtype, prompt_field, progress=True,
        )  # fmt: skip
    except MeasureInputError as err:
        _fail(str(err))
    _say(result["finding"])
    _say(f"wrote {out}")


@measure_app.command()
def repetition(
    model: ModelDir,
    out: Annotated[Path, typer.Option(help="Output directory.")],
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
    from irlhf.measure import MeasureInputError, measure_repetition

    try:
        result = measure_repetition(
            model, out, prompts, sentences, max_repeats, max_new_tokens, samples, seed,
            batch_size, device, dtype, prompt_field, progress=True,
        )  # fmt: skip
    except MeasureInputError as err:
        _fail(str(err))
    _say(result["finding"])
    _say(f"wrote {out}")


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
    prompts: Annotated[
        Path,
        typer.Option(
            help="Prompts: .txt (one per line), .jsonl / .json (objects with --prompt-field), "
            ".parquet, or a datasets directory (save_to_disk)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output directory.")],
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
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="float32, bfloat16 or float16 for the forward passes.")
    ] = "float32",
    prompt_field: Annotated[
        str, typer.Option("--prompt-field", help="The prompt field of .jsonl/.json/.parquet.")
    ] = "prompt",
) -> None:
    """Reward-model scores of each model's continuations (the Llama 2 Figure 20 analogue):
    overlaid histograms and KDEs, means and quantiles with bootstrap intervals over prompts, and
    win rates between models; writes OUT/measure.json, results.parquet, samples.parquet, figures
    and report.html."""
    from irlhf.measure import MeasureInputError, measure_rewards

    try:
        result = measure_rewards(
            reward, models, prompts, out, max_new_tokens, decoding, temperature, samples, seed,
            batch_size, device, dtype, prompt_field, progress=True,
        )  # fmt: skip
    except MeasureInputError as err:
        _fail(str(err))
    _say(result["finding"])
    _say(f"wrote {out}")


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


if __name__ == "__main__":
    sys.exit(app())
