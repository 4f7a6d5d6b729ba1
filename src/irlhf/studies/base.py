"""Studies: the essay's claims, each a grid of experiment configs and a summary of its table.

A study names a claim (`title`, `description`), builds its grid for a profile (`configs`:
"quick" for a smoke check, "default" for the report, "full" for the paper-sized grid) and turns
the long results table into headline numbers and figures (`summarize`). A study that can run in
several worlds lists them (`worlds`, the first is its default, chosen by `irlhf study NAME
--world W`) and its `configs` takes another world as a second argument. `run_study` executes the
grid on the experiment platform (so it caches, resumes and runs on Ray) and writes

    OUT/runs/            the run directories
    OUT/results.parquet  one row per run x metric record
    OUT/summary.json     what `summarize` returned (headline numbers, documented keys)
    OUT/study.json       title, description, profile, world, the part of the grid run
                         (`only`), versions, date, run counts, the run ids of configs.json
    OUT/configs.json     the distinct resolved configs of the grid
    OUT/*.png            the figures `summarize` wrote

Everything is validated (study names, profile, world, executor, every config, `only`) before
anything is written; `run_studies` runs several studies' grids in one pool. `only` runs part of
a grid (`select_configs`: the configs whose flattened field KEY has one of the given values),
into the same run directories; the summary is then made from that part only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ValidationError

from irlhf.experiments.config import flatten, resolved, run_id, validation_error
from irlhf.experiments.errors import ConfigError
from irlhf.experiments.provenance import software_versions, utc_now
from irlhf.experiments.registry import kind_of, registered_kinds
from irlhf.experiments.results import results_table, write_results
from irlhf.experiments.run import RunResult, one_line
from irlhf.experiments.storage import atomic_write_json
from irlhf.experiments.sweep import check_executor, execute_runs

PROFILES = ("quick", "default", "full")
SUMMARY_FILE, STUDY_FILE, CONFIGS_FILE, RESULTS_FILE = (
    "summary.json",
    "study.json",
    "configs.json",
    "results.parquet",
)


@dataclass(frozen=True)
class Study:
    """One claim of the essay, measured.

    name:        the CLI name (`irlhf study NAME`), also the report section's anchor.
    title:       a one-line human title for the report.
    description: the claim it measures, a few sentences (shown in the report).
    configs:     profile ("quick" | "default" | "full") -> the experiment configs of the grid
                 (in the default world); with `worlds`, also (profile, world) -> the grid in
                 another world it lists.
    summarize:   (results table, out dir) -> JSON-able summary; writes PNG figures into out dir.
                 The key "headline" (a list of {"name", "value", "ci_low", "ci_high"}) and any
                 other list of row dicts are shown as tables in the report.
    worlds:      the worlds `configs` accepts ("automaton", "oracle", "text"), the default
                 first; empty (the default) = the study runs in one fixed world.
    descriptions: world -> the claim as measured in that world, where it differs from
                 `description` (shown in the report, with the world in the title).
    titles:      world -> the title in that world, where it differs from `title`.
    reproduce_worlds: the worlds `irlhf reproduce` (and `make reproduce`) runs the study in;
                 empty (the default) = its default world only.
    """

    name: str
    title: str
    description: str
    configs: Callable[..., Sequence[BaseModel]]
    summarize: Callable[[pd.DataFrame, Path], dict]
    worlds: tuple[str, ...] = ()
    descriptions: Mapping[str, str] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)
    reproduce_worlds: tuple[str, ...] = ()


StudyKey = str | tuple[str, str | None]
"""A study to run: its name (in the `world` of the call, or its default), or (name, world)."""

STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> None:
    """Add a study to `STUDIES` (re-registering the same name replaces it)."""
    if not study.name.isidentifier():
        raise ValueError(f"study name must be an identifier (got {study.name!r})")
    STUDIES[study.name] = study


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ConfigError("--profile", f"must be one of: {', '.join(PROFILES)} (got {profile!r})")
    return profile


def check_world(study: Study, world: str | None) -> str | None:
    """The world `study` runs in: `world`, or the study's default when None."""
    if world is None:
        return study.worlds[0] if study.worlds else None
    if not study.worlds:
        raise ConfigError("--world", f"study {study.name} runs in one fixed world (got {world!r})")
    if world not in study.worlds:
        allowed = ", ".join(study.worlds)
        raise ConfigError("--world", f"study {study.name} supports: {allowed} (got {world!r})")
    return world


def get_study(name: str) -> Study:
    if name not in STUDIES:
        allowed = ", ".join(sorted(STUDIES)) or "none registered (see irlhf.studies.STUDY_MODULES)"
        raise ConfigError("study", f"must be one of: {allowed} (got {name!r})")
    return STUDIES[name]


def study_configs(study: Study, profile: str, world: str | None = None) -> list[BaseModel]:
    """The study's grid for `profile` (in `world`, default: the study's own), every config
    checked to belong to a registered kind."""
    world = check_world(study, world)
    source = f"study {study.name} (profile {profile}" + (f", world {world})" if world else ")")
    try:
        default = not study.worlds or world == study.worlds[0]
        grid = study.configs(profile) if default else study.configs(profile, world)
        configs = list(grid)
        for config in configs:
            if not isinstance(config, BaseModel):
                raise ConfigError("configs", f"not a pydantic model: {config!r:.60}")
            kind_of(config)
    except ValidationError as err:
        raise validation_error(err, _model_named(err.title), source) from None
    except ConfigError as err:
        raise err.with_source(source) from None
    if not configs:
        raise ConfigError("configs", "the grid is empty", source)
    return configs


def _model_named(name: str) -> type[BaseModel]:
    """The registered config model called `name` (for field bounds in error messages)."""
    models = {k.config_model.__name__: k.config_model for k in registered_kinds().values()}
    return models.get(name, BaseModel)


Only = Mapping[str, Sequence[str]]
"""A part of a grid: flattened config field (e.g. "policy.kind") -> the values to keep."""


def _shown(value: str) -> str:
    """A config value (canonical JSON) as one would type it: strings without quotes."""
    loaded = json.loads(value)
    return loaded if isinstance(loaded, str) else value


def _as_json(text: str) -> str:
    """A command-line value in the canonical JSON form of config values ("0.50" -> "0.5",
    "tabular" -> '"tabular"')."""
    try:
        return json.dumps(json.loads(text))
    except ValueError:
        return json.dumps(text)


def select_configs(configs: Sequence[BaseModel], only: Only) -> list[BaseModel]:
    """The configs whose flattened field KEY equals one of its VALUES, for every KEY of `only`
    (values as typed on a command line: JSON numbers, booleans and null, or plain strings).
    A KEY no config has, or a VALUE no config has, is a ConfigError naming the allowed ones."""
    flat = [
        {k: json.dumps(v, sort_keys=True) for k, v in flatten(resolved(c)).items()} for c in configs
    ]
    keep = [True] * len(configs)
    for key, values in only.items():
        seen = list(dict.fromkeys(f[key] for f in flat if key in f))
        if not seen:
            varying = sorted(
                {k for f in flat for k in f if len({g[k] for g in flat if k in g}) > 1}
            )
            raise ConfigError(
                "--only",
                f"no config of the grid has the field {key!r} (fields that vary: "
                f"{', '.join(varying) or 'none'}; fixed fields are allowed too)",
            )
        wanted = {_as_json(v) for v in values}
        missing = [v for v in values if _as_json(v) not in seen]
        if missing:
            raise ConfigError(
                f"--only {key}",
                f"no config has the value {', '.join(missing)} "
                f"(values: {', '.join(_shown(v) for v in seen)})",
            )
        keep = [k and f.get(key) in wanted for k, f in zip(keep, flat, strict=True)]
    chosen = [c for c, k in zip(configs, keep, strict=True) if k]
    if not chosen:
        parts = " and ".join(f"{k}={','.join(v)}" for k, v in only.items())
        raise ConfigError("--only", f"no config of the grid has {parts}")
    return chosen


@dataclass(frozen=True)
class StudyPlan:
    """A validated study run: what to run and where to write it."""

    study: Study
    out: Path
    configs: list[BaseModel]
    world: str | None = None
    """The world it runs in (None: the study's one fixed world)."""
    only: Only | None = None
    """The part of the grid it runs (None: all of it)."""


def plan_studies(
    targets: Mapping[StudyKey, Path],
    profile: str,
    world: str | None = None,
    teacher: str | Path | None = None,
    only: Only | None = None,
) -> list[StudyPlan]:
    """Validate study names, profile, world and every config; writes nothing. `world` applies
    to every study (None: each study's default); `teacher`, a local Hugging Face model
    directory, replaces the teacher of every text-world run; `only` keeps part of each grid
    (`select_configs`)."""
    check_profile(profile)
    plans = []
    for key, out in targets.items():
        name, wanted = key if isinstance(key, tuple) else (key, world)
        study = get_study(name)
        chosen = check_world(study, wanted)
        configs = study_configs(study, profile, chosen)
        if teacher is not None:
            configs = with_teacher(configs, teacher, f"study {name}")
        if only:
            try:
                configs = select_configs(configs, only)
            except ConfigError as err:
                raise err.with_source(f"study {name} (profile {profile})") from None
        plans.append(StudyPlan(study, Path(out), configs, chosen, dict(only) if only else None))
    return plans


def with_teacher(configs: Sequence[BaseModel], teacher: str | Path, source: str) -> list[BaseModel]:
    """The configs with `world.teacher_dir = teacher` in every text-world run. The directory is
    loaded once here, so a missing or malformed one is a one-line error before any run starts."""
    from irlhf.worlds.text import TextSpec, load_teacher

    path = Path(teacher).expanduser().resolve()
    try:
        policy, _ = load_teacher(path)  # checks the directory, the weights and the tokenizer
    except (ValueError, OSError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError("--teacher", detail) from None
    context = getattr(policy.model.config, "max_position_embeddings", None)
    worlds = [getattr(c, "world", None) for c in configs]
    texts = [isinstance(w, TextSpec) for w in worlds]
    for w in worlds:
        need = w.prompt_length + w.horizon if isinstance(w, TextSpec) else 0
        if context is not None and need > context:
            raise ConfigError(
                "--teacher",
                f"the model's context is {context} tokens, shorter than a run's prompt_length + "
                f"horizon = {need}",
                source,
            )
    if not any(texts):
        raise ConfigError(
            "--teacher",
            "applies to text-world runs only (degeneration, or a study with --world text); "
            "this grid has none",
            source,
        )
    # validated anew (not model_copy): the world's digest of the directory is filled in
    return [
        c.model_copy(update={"world": _with_teacher_dir(w, path)}) if isinstance(w, TextSpec) else c
        for c, w in zip(configs, worlds, strict=True)
    ]


def _with_teacher_dir(world: BaseModel, path: Path) -> BaseModel:
    data = world.model_dump() | {"teacher_dir": str(path), "teacher_digest": None}
    return type(world).model_validate(data)


def _study_record(plan: StudyPlan, profile: str, results: Sequence[RunResult]) -> dict[str, Any]:
    study, world = plan.study, plan.world
    elsewhere = world is not None and study.worlds[:1] != (world,)  # not the default world
    return {
        "name": study.name,
        "title": (study.titles.get(world, study.title) if world else study.title)
        + (f" ({world} world)" if elsewhere else ""),
        "description": study.descriptions.get(world, study.description)
        if world
        else study.description,
        "profile": profile,
        "world": plan.world,
        "only": {k: list(v) for k, v in plan.only.items()} if plan.only else None,
        "date": utc_now(),
        "versions": software_versions(),
        "n_runs": len({r.run_id for r in results}),
        "n_failed": len({r.run_id for r in results if r.status != "done"}),
        "run_seconds": sum({r.run_id: r.seconds for r in results}.values()),
        "error": None,
    }


def finish_study(
    plan: StudyPlan, profile: str, results: Sequence[RunResult], raise_errors: bool = True
) -> dict[str, Any]:
    """Write the table, the configs, the summary and the study record of a finished grid."""
    out = plan.out
    table = results_table(zip(plan.configs, results, strict=True))
    write_results(table, out / RESULTS_FILE)
    distinct = {run_id(c): resolved(c) for c in plan.configs}
    atomic_write_json(out / CONFIGS_FILE, list(distinct.values()))
    record = _study_record(plan, profile, results) | {"run_ids": list(distinct)}
    try:
        summary = plan.study.summarize(table, out)
        json.dumps(summary)  # JSON-able, or fail here rather than half-way through the write
        atomic_write_json(out / SUMMARY_FILE, summary, sort_keys=False)  # the study's order
    except Exception as exc:
        (out / SUMMARY_FILE).unlink(missing_ok=True)
        record["error"] = f"summarize failed: {one_line(exc)}"
        atomic_write_json(out / STUDY_FILE, record, sort_keys=False)
        if raise_errors:
            raise
        return {"error": record["error"]}
    atomic_write_json(out / STUDY_FILE, record, sort_keys=False)
    return summary


def run_studies(
    targets: Mapping[StudyKey, Path],
    profile: str,
    executor: str = "local",
    address: str | None = None,
    max_workers: int | None = None,
    progress: bool = True,
    raise_errors: bool = True,
    world: str | None = None,
    teacher: str | Path | None = None,
    only: Only | None = None,
) -> dict[str, dict]:
    """Run several studies (name, or (name, world) -> out dir) with all their runs in one pool;
    the same keys -> summaries.

    With raise_errors=False a study whose summarize fails gives {"error": ...} and the others
    still finish (`irlhf reproduce`). `world` applies to every study (None: their defaults);
    `only` keeps part of every grid (`select_configs`).
    """
    check_executor(executor, address, max_workers)
    plans = plan_studies(targets, profile, world, teacher, only)
    runs = [(config, plan.out / "runs") for plan in plans for config in plan.configs]
    label = plans[0].study.name if len(plans) == 1 else f"{len(plans)} studies"
    results = execute_runs(runs, executor, address, max_workers, progress, label)
    summaries: dict = {}
    start = 0
    for key, plan in zip(targets, plans, strict=True):
        chunk = results[start : start + len(plan.configs)]
        start += len(plan.configs)
        summaries[key] = finish_study(plan, profile, chunk, raise_errors)
    return summaries


def run_study(
    name: str,
    profile: str,
    out: Path,
    executor: str = "local",
    address: str | None = None,
    progress: bool = True,
    max_workers: int | None = None,
    world: str | None = None,
    teacher: str | Path | None = None,
    only: Only | None = None,
    raise_errors: bool = True,
) -> dict:
    """Run one study's grid (in `world`, default: the study's own; text-world runs with
    `teacher` as their teacher when given; only the part `only` selects) into `out`; its
    summary ({"error": ...} if summarize fails and not `raise_errors`)."""
    summaries = run_studies(
        {name: Path(out)}, profile, executor, address, max_workers, progress, raise_errors,
        world=world, teacher=teacher, only=only,
    )  # fmt: skip
    return summaries[name]
