"""The registry of experiment kinds: which config model and which run function a `kind` names.

Science code registers each experiment kind once, at import of its module:

    register_kind("counter", CounterConfig, run_counter)

`CounterConfig` is a pydantic model (``extra="forbid"``) of the whole experiment config with a
field ``kind: Literal["counter"]`` and a field ``seed: int``; `run_counter(config, ctx)` returns
metric records (dicts with "metric" and "value" plus coordinates). Worker processes re-import the
registering module (recorded here) so that the registry is the same in every process.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from irlhf.experiments.errors import ConfigError

if TYPE_CHECKING:
    from irlhf.experiments.run import RunContext

RunFn = Callable[[Any, "RunContext"], list[dict]]


@dataclass(frozen=True)
class Kind:
    """A registered experiment kind."""

    name: str
    config_model: type[BaseModel]
    run: RunFn
    version: int = 1
    """Results version: bumped when the kind's code changes its numbers for an unchanged
    config, so that runs cached by an older version are not reused (it salts the run id)."""

    @property
    def module(self) -> str:
        """The module that registered this kind; workers import it before running."""
        return self.run.__module__


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
    _KINDS[name] = Kind(name=name, config_model=config_model, run=run, version=version)


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
    return ", ".join(sorted(_KINDS)) or "none registered (see irlhf.experiments.kinds)"


def kind_of(config: BaseModel) -> Kind:
    """The registered kind of a validated config."""
    kind = get_kind(getattr(config, "kind", None))
    if not isinstance(config, kind.config_model):
        raise TypeError(f"config is a {type(config).__name__}, not a {kind.config_model.__name__}")
    return kind


def results_version(kind: object) -> int:
    """The results version of the kind called `kind`, importing the kind modules if it is not
    registered yet (so that every process computes the same run id); 1 for an unknown kind."""
    if not isinstance(kind, str):
        return 1
    if kind not in _KINDS:
        from irlhf.experiments.kinds import load_kinds

        load_kinds()
    registered = _KINDS.get(kind)
    return registered.version if registered is not None else 1
