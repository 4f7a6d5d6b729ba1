"""TOML experiment configs: loading, validation with one-line errors, sweeps and run hashes.

A config file is a TOML table whose `kind` names a registered experiment kind; the rest is
validated (strictly: no "1" for 1, no 1.0 for an int, no unknown keys) by that kind's pydantic
model. An optional `[sweep]` table maps dotted field paths to lists of values; the file then
stands for the cartesian product of those values:

    kind = "counter"
    seed = 0
    steps = 20
    [world]
    exit_prob = 0.1
    [sweep]
    seed = [0, 1, 2]
    "world.exit_prob" = [0.0, 0.5, 1.0]      # or, unquoted, world.exit_prob = [...]

Runs are content-addressed: `run_hash` is the sha256 of the canonical JSON of the resolved
config (salted by the kind's results version), so the same experiment always lands in the same
run directory; `run_id` finds the version of a config's kind in the registry.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import itertools
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from irlhf.experiments.errors import ConfigError
from irlhf.experiments.registry import allowed_kinds, get_kind, kind_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

SWEEP_KEY = "sweep"
_MAX_GOT = 40


# ---- reading files ----------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    """The raw table of a TOML file; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("", "no such file" if not path.exists() else "not a file", str(path))
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError("", f"not UTF-8 text ({err.reason})", str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("", f"invalid TOML: {err}", str(path)) from None


def load_config(path: Path) -> BaseModel:
    """One validated experiment config from a TOML file (dispatching on its `kind`).

    A file with a `[sweep]` table is rejected here; use `load_sweep` for it.
    """
    return parse_config(read_toml(path), source=str(path))


def load_sweep(path: Path) -> list[BaseModel]:
    """Every validated config a TOML file stands for (one if it has no `[sweep]` table)."""
    source = str(path)
    try:
        points = expand_sweep(read_toml(path))
    except ConfigError as err:
        raise err.with_source(source) from None
    return [parse_config(point, source=source) for point in points]


# ---- validation -------------------------------------------------------------------------------


def parse_config(raw: dict[str, Any], source: str | None = None) -> BaseModel:
    """Validate a raw config table against the model of its `kind`."""
    try:
        if SWEEP_KEY in raw:
            n = len(expand_sweep(raw))
            raise ConfigError(SWEEP_KEY, f"this file is a sweep of {n} runs; use `irlhf sweep`")
        model = _model_of(raw)
        text = json.dumps(raw, default=_toml_scalar)
        return model.model_validate_json(text, strict=True)
    except ValidationError as err:
        raise validation_error(err, model, source) from None
    except ConfigError as err:
        raise err.with_source(source) if source else err from None


def _model_of(raw: dict[str, Any]) -> type[BaseModel]:
    if "kind" not in raw:
        raise ConfigError("kind", f"required field missing (one of: {allowed_kinds()})")
    return get_kind(raw["kind"]).config_model


def _toml_scalar(value: object) -> str:
    """TOML dates and times have no JSON form; pass them on as ISO strings."""
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def validation_error(
    err: ValidationError, model: type[BaseModel], source: str | None = None
) -> ConfigError:
    """A pydantic ValidationError as a one-line ConfigError about its first problem."""
    problems = err.errors(include_url=False)
    first = problems[0]
    path = _dotted_path(model, first["loc"]) or model.__name__
    detail = _describe(model, first)
    if len(problems) > 1:
        detail += f" (+{len(problems) - 1} more problems)"
    return ConfigError(path, detail, source)


def _describe(model: type[BaseModel], problem: ErrorDetails) -> str:
    kind, loc = problem["type"], tuple(problem["loc"])
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc)
        return "unknown field" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind in _BOUND_ERRORS:
        bounds = _bounds(model, loc) or dict(problem.get("ctx", {}))
        return f"{_bounds_text(bounds)} (got {_got(problem['input'])})"
    message = problem["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message.replace("Input should be", "must be").replace("Input ", "value ")
    message = message.replace("an object", "a table").replace("a valid dictionary", "a table")
    return f"{message[:1].lower()}{message[1:]} (got {_got(problem['input'])})"


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_BOUND_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _bounds_text(bounds: dict[str, Any]) -> str:
    if "ge" in bounds and "le" in bounds:
        return f"must be between {_num(bounds['ge'])} and {_num(bounds['le'])}"
    parts = [f"{sym} {_num(bounds[key])}" for key, sym in _BOUND_SYMBOLS.items() if key in bounds]
    return "must be " + " and ".join(parts)


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _got(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _MAX_GOT else text[: _MAX_GOT - 3] + "..."


# ---- walking a model's fields -----------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold directly (through Optional/Union/Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        args = typing.get_args(annotation)
        args = args[:1] if origin is typing.Annotated else args
        return [m for arg in args for m in _models_in(arg)]
    return []


def _item_models(annotation: Any) -> list[type[BaseModel]]:
    """The models held by the items of a list/tuple annotation (list[World] -> [World])."""
    if typing.get_origin(annotation) in (list, tuple):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return [m for arg in typing.get_args(annotation) for m in _item_models(arg)]


@dataclass
class _Walk:
    """Where an error location leads in a model."""

    parts: list[str] = field(default_factory=list)  # the dotted path, union tags dropped
    info: FieldInfo | None = None  # the final field, when it is a declared field
    parent_models: list[type[BaseModel]] = field(default_factory=list)  # where it was looked up


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> _Walk:
    """Follow an error location through nested models. Union member tags that pydantic puts
    into locations ('AutomatonWorld', 'function-after[...]') are not field names: skipped."""
    walk = _Walk()
    models: list[type[BaseModel]] = [model]
    annotation: Any = model
    for i, step in enumerate(loc):
        walk.parent_models, walk.info = models, None
        if isinstance(step, int):
            walk.parts[-1:] = [f"{walk.parts[-1] if walk.parts else ''}[{step}]"]
            models = _item_models(annotation)
            continue
        owner = next((m for m in models if step in m.model_fields), None)
        if owner is None and models and i < len(loc) - 1:
            models = _tagged(models, step)
            continue
        walk.parts.append(str(step))
        if owner is None:
            models = []
            continue
        walk.info = owner.model_fields[step]
        annotation = walk.info.annotation
        models = _models_in(annotation)
    return walk


def _tagged(models: list[type[BaseModel]], tag: Any) -> list[type[BaseModel]]:
    """The members of a union that a location's tag names (a `Literal[tag]` field, as in a
    discriminated union), or all of them when none does."""
    named = [
        m
        for m in models
        if any(
            typing.get_origin(f.annotation) is typing.Literal
            and typing.get_args(f.annotation) == (tag,)
            for f in m.model_fields.values()
        )
    ]
    return named or models


def _dotted_path(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    return ".".join(_walk(model, loc).parts)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Names of the fields allowed beside the (unknown) field at `loc`."""
    return sorted({name for m in _walk(model, loc).parent_models for name in m.model_fields})


def _bounds(model: type[BaseModel], loc: tuple[Any, ...]) -> dict[str, Any]:
    """The numeric bounds (ge/gt/le/lt) declared on the field at `loc`."""
    info = _walk(model, loc).info
    bounds: dict[str, Any] = {}
    for constraint in info.metadata if info else []:
        for key in _BOUND_SYMBOLS:
            value = getattr(constraint, key, None)
            if value is not None:
                bounds[key] = value
    return bounds


def check_field_path(model: type[BaseModel], path: str) -> None:
    """Raise a ConfigError unless the dotted `path` names a field of `model` (or lies inside a
    free-form table such as a dict field, which cannot be checked further)."""
    models = [model]
    walked: list[str] = []
    for part in path.split("."):
        if not models:
            return  # inside a dict/any-typed field
        allowed = {name for m in models for name in m.model_fields}
        if part not in allowed:
            where = ".".join(walked) or model.__name__
            raise ConfigError(
                f"{SWEEP_KEY}.{path}",
                f"{part!r} is not a field of {where} (allowed: {', '.join(sorted(allowed))})",
            )
        owner = next(m for m in models if part in m.model_fields)
        models = _models_in(owner.model_fields[part].annotation)
        walked.append(part)


# ---- sweeps -----------------------------------------------------------------------------------


def _flatten_sweep(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> values; unquoted dotted TOML keys arrive as nested tables."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten_sweep(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    node = raw
    *parents, leaf = path.split(".")
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parents[: i + 1])
            raise ConfigError(f"{SWEEP_KEY}.{path}", f"{prefix!r} is not a table in the config")
        node = child
    node[leaf] = copy.deepcopy(value)


def expand_sweep(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw configs of every grid point: the cartesian product of the `[sweep]` lists, in the
    order the sweep keys are written (the last key varies fastest). No sweep: one point."""
    base = {k: v for k, v in raw.items() if k != SWEEP_KEY}
    sweep = raw.get(SWEEP_KEY)
    if sweep is None:
        return [copy.deepcopy(base)]
    if not isinstance(sweep, dict) or not sweep:
        raise ConfigError(SWEEP_KEY, "must be a non-empty table of field path -> list of values")
    model = _model_of(base)
    grid = _flatten_sweep(sweep)
    for path, values in grid.items():
        if path == "kind":
            raise ConfigError(f"{SWEEP_KEY}.kind", "cannot be swept; write one file per kind")
        check_field_path(model, path)
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{SWEEP_KEY}.{path}", f"must be a non-empty list of values (got {_got(values)})"
            )
    points = []
    for combo in itertools.product(*grid.values()):
        point = copy.deepcopy(base)
        for path, value in zip(grid, combo, strict=True):
            _set_path(point, path, value)
        points.append(point)
    return points


# ---- identity ---------------------------------------------------------------------------------


def resolved(config: BaseModel) -> dict[str, Any]:
    """The resolved config (every default filled in) as JSON-able data."""
    return config.model_dump(mode="json")


def canonical_json(config: BaseModel | dict[str, Any]) -> str:
    """Compact, key-sorted JSON of the resolved config: the input of `run_hash`."""
    data = config if isinstance(config, dict) else resolved(config)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def run_hash(config: BaseModel | dict[str, Any], version: int) -> str:
    """First 16 hex digits of the sha256 of `canonical_json(config)`, salted by the kind's
    results `version` when it is above 1: the run's id. (A resolved config read back from
    config.json hashes to the same id; version-1 ids are the unsalted hash, as before versions.)"""
    text = canonical_json(config)
    if version > 1:
        text += f"\nresults version {version}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_id(config: BaseModel) -> str:
    """The run id of a validated config: `run_hash` at its registered kind's results version."""
    return run_hash(config, kind_of(config).version)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as one level with dotted keys ({"world": {"p": 1}} -> {"world.p": 1})."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
