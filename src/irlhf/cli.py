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
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from irlhf.cli_measure import measure_app
from irlhf.cli_output import console
from irlhf.cli_output import fail as _fail
from irlhf.cli_output import say as _say
from irlhf.experiments.errors import ConfigError

app = typer.Typer(
    name="irlhf",
    help="Why do we need RLHF? Run the experiments, sweeps and studies that measure it, "
    "and write the report.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(measure_app, name="measure")  # irlhf measure exposure|recovery|repetition|...

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


if __name__ == "__main__":
    sys.exit(app())
