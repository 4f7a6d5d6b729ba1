"""The registry of experiment kinds: which config model and which run function a `kind` names.

Science code registers each experiment kind once, at import of its module:

    register_kind("counter", CounterConfig, run_counter, version=1)

`CounterConfig` is a pydantic model (``extra="forbid"``) of the whole experiment config with a
field ``kind: Literal["counter"]`` and a field ``seed: int``; `run_counter(config, ctx)` returns
metric records (dicts with "metric" and "value" plus coordinates). The registry records, as data,
the kind's results version (which salts its run ids) and the module that registered it: a worker
process imports that module by name before it runs a config of the kind. The platform imports no
science module itself; whoever loads configs imports the modules that register their kinds.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from irlhf.experiments.errors import ConfigError

RunFn = Callable[[Any, Any], list[dict]]
"""run(config, ctx) -> metric records; ctx is an `irlhf.experiments.run.RunContext` (not
imported here: the run module imports the registry)."""


@dataclass(frozen=True)
class Kind:
    """A registered experiment kind."""

    name: str
    config_model: type[BaseModel]
    run: RunFn
    version: int = 1
    """Results version: bumped when the kind's code changes its numbers for an unchanged
    config, so that runs cached by an older version are not reused (it salts the run id)."""
    module: str = ""
    """The module that registered this kind (its run function's); workers import it."""


_KINDS: dict[str, Kind] = {}


def _check_config_model(name: str, config_model: type[BaseModel]) -> None:
    if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)):
        raise TypeError(f"kind {name!r}: config_model must be a pydantic BaseModel subclass")
    fields = config_model.model_fields
    for required in ("kind", "seed"):
        if required not in fields:
            raise TypeError(f"kind {name!r}: {config_model.__name__} needs a field {required!r}")
    if typing.get_args(fields["kind"].annotation) != (name,):
        raise TypeError(
            f"kind {name!r}: {config_model.__name__}.kind must be annotated Literal[{name!r}]"
        )
    if config_model.model_config.get("extra") != "forbid":
        raise TypeError(f"kind {name!r}: {config_model.__name__} must set extra='forbid'")


def register_kind(name: str, config_model: type[BaseModel], run: RunFn, version: int = 1) -> None:
    """Register an experiment kind. Re-registering the same function (a module re-imported) is a
    no-op; registering a different function under a taken name is an error. `version`: the
    kind's results version (see `Kind.version`)."""
    _check_config_model(name, config_model)
    existing = _KINDS.get(name)
    if existing is not None and (existing.module, existing.run.__qualname__) != (
        run.__module__,
        run.__qualname__,
    ):
        raise ValueError(
            f"experiment kind {name!r} is already registered by "
            f"{existing.module}.{existing.run.__qualname__}"
        )
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"kind {name!r}: version must be an integer >= 1 (got {version!r})")
    _KINDS[name] = Kind(name, config_model, run, version, module=run.__module__)


def registered_kinds() -> dict[str, Kind]:
    """A copy of the registry, name -> Kind."""
    return dict(_KINDS)


def get_kind(name: object) -> Kind:
    """The kind called `name`; a ConfigError naming the field `kind` and the allowed values."""
    if isinstance(name, str) and name in _KINDS:
        return _KINDS[name]
    raise ConfigError("kind", f"must be one of: {allowed_kinds()} (got {name!r})")


def allowed_kinds() -> str:
    """The registered kind names, for error messages."""
    return ", ".join(sorted(_KINDS)) or "none registered (import the modules that register them)"


def kind_of(config: BaseModel) -> Kind:
    """The registered kind of a validated config."""
    kind = get_kind(getattr(config, "kind", None))
    if not isinstance(config, kind.config_model):
        raise TypeError(f"config is a {type(config).__name__}, not a {kind.config_model.__name__}")
    return kind
