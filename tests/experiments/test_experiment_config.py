"""Config loading: one-line errors naming the field (fuzzed), sweeps, run hashes."""

from __future__ import annotations

import copy
import hashlib
import string
from pathlib import Path
from typing import Any

import pytest
import tomltools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toykind import CounterConfig

from irlhf.experiments import ConfigError, canonical_json, expand_sweep, load_config, run_hash
from irlhf.experiments.config import load_sweep, parse_config

VALID: dict[str, Any] = {
    "kind": "counter",
    "seed": 3,
    "steps": 10,
    "checkpoint_every": 5,
    "offset": 0.0,
    "world": {"scale": 0.5, "mode": "sum"},
}
FIELDS = ["kind", "seed", "steps", "checkpoint_every", "offset", "fail_on_seed", "world"]
WORLD_FIELDS = ["mode", "scale"]

# field path -> (type, (low, high) inclusive bounds or None)
NUMERIC = {
    "seed": (int, (0, None)),
    "steps": (int, (1, 10_000)),
    "checkpoint_every": (int, (1, None)),
    "offset": (float, (-10, 10)),
    "world.scale": (float, (0, 1)),
}


def write(tmp_path: Path, raw: dict[str, Any], name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(tomltools.dumps(raw), encoding="utf-8")
    return path


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


# ---- the happy path ---------------------------------------------------------------------------


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"kind": "counter", "seed": 1}))
    assert config == CounterConfig(seed=1)
    assert config.world.scale == 1.0


def test_sweep_is_the_cartesian_product_in_key_order() -> None:
    raw = {**VALID, "sweep": {"seed": [0, 1], "world": {"scale": [0.1, 0.2, 0.3]}}}
    points = expand_sweep(raw)
    assert [(p["seed"], p["world"]["scale"]) for p in points] == [
        (s, x) for s in (0, 1) for x in (0.1, 0.2, 0.3)
    ]
    assert all(p["world"]["mode"] == "sum" and "sweep" not in p for p in points)


def test_sweep_creates_missing_tables_and_validates_every_point(tmp_path: Path) -> None:
    raw = {"kind": "counter", "seed": 0, "sweep": {"world.scale": [0.0, 1.0]}}
    configs = load_sweep(write(tmp_path, raw))
    assert [c.world.scale for c in configs] == [0.0, 1.0]


def test_run_hash_ignores_key_order_and_defaults_but_not_values() -> None:
    a = parse_config({"kind": "counter", "seed": 1, "steps": 20})
    b = parse_config({"steps": 20, "seed": 1, "kind": "counter", "world": {"scale": 1.0}})
    assert run_hash(a, 1) == run_hash(b, 1)
    assert len(run_hash(a, 1)) == 16 and all(c in string.hexdigits for c in run_hash(a, 1))
    assert run_hash(a, 1) != run_hash(CounterConfig(seed=2), 1)


def test_run_hash_is_the_sha256_of_the_canonical_json() -> None:
    # Finished runs are found by this hash: changing its definition loses every cache.
    config = CounterConfig(seed=1, fail_on_seed=None)
    canonical = (
        '{"checkpoint_every":5,"fail_on_seed":null,"kind":"counter","offset":0.0,"seed":1,'
        '"steps":20,"world":{"mode":"sum","scale":1.0}}'
    )
    assert canonical_json(config) == canonical
    assert run_hash(config, 1) == hashlib.sha256(canonical.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {**VALID, "world": {"scale": 1.5}},
            "exp.toml: world.scale: must be between 0 and 1 (got 1.5)",
        ),
        ({**VALID, "steps": 0}, "exp.toml: steps: must be between 1 and 10000 (got 0)"),
        ({**VALID, "seed": -1}, "exp.toml: seed: must be >= 0 (got -1)"),
        ({**VALID, "seed": "1"}, 'exp.toml: seed: must be a valid integer (got "1")'),
        ({**VALID, "world": {"mode": "min"}}, "exp.toml: world.mode: must be 'sum' or 'max'"),
        ({**VALID, "nope": 1}, "exp.toml: nope: unknown field (allowed: checkpoint_every,"),
        ({"kind": "counter"}, "exp.toml: seed: required field missing"),
        ({**VALID, "kind": "nope"}, "exp.toml: kind: must be one of: "),
        ({**VALID, "sweep": {"world.nope": [1]}}, "exp.toml: sweep.world.nope: 'nope' is not"),
        ({**VALID, "sweep": {"seed": 3}}, "exp.toml: sweep.seed: must be a non-empty list"),
    ],
)
def test_error_messages_name_file_field_and_allowed_values(
    tmp_path: Path, raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_sweep(write(tmp_path, raw))
    assert str(info.value).startswith(str(tmp_path / message.split(":")[0]))
    assert message.split(": ", 1)[1] in str(info.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("kind = \nseed = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML: .*line 1"):
        load_config(bad)


def test_run_refuses_a_sweep_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sweep: this file is a sweep of 2 runs"):
        load_config(write(tmp_path, {**VALID, "sweep": {"seed": [1, 2]}}))


# ---- fuzzing: every invalid config is a one-line ConfigError naming the field -----------------

not_ints = st.one_of(
    st.text(max_size=5),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
not_floats = st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.floats(), max_size=2))
names = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)


@st.composite
def valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    raw = copy.deepcopy(VALID)
    raw["seed"] = draw(st.integers(0, 10**6))
    raw["steps"] = draw(st.integers(1, 10_000))
    raw["world"]["scale"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        del raw["offset"]  # defaults may be left out
    return raw


def wrong_type(raw: dict[str, Any], draw: st.DrawFn) -> str:
    path = draw(st.sampled_from([*NUMERIC, "world.mode"]))
    kind = NUMERIC.get(path, (str, None))[0]
    bad = {int: not_ints, float: not_floats, str: st.integers() | st.floats(allow_nan=False)}
    value = draw(bad[kind].filter(lambda v: not (kind is float and type(v) is int)))
    set_path(raw, path, value)
    return path


def out_of_range(raw: dict[str, Any], draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(list(NUMERIC)))
    kind, (low, high) = NUMERIC[path]
    if kind is int:
        options = [st.integers(max_value=low - 1)]
        options += [st.integers(min_value=high + 1)] if high is not None else []
    else:
        options = [st.floats(max_value=low, exclude_max=True)]
        options += [st.floats(min_value=high, exclude_min=True)] if high is not None else []
    set_path(raw, path, draw(st.one_of(options)))
    return path


def unknown_key(raw: dict[str, Any], draw: st.DrawFn) -> str:
    table = draw(st.sampled_from(["", "world."]))
    known = WORLD_FIELDS if table else FIELDS
    key = draw(names.filter(lambda k: k not in known and k != "sweep"))
    set_path(raw, table + key, draw(st.integers() | st.text(max_size=3)))
    return table + key


def missing_field(raw: dict[str, Any], draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(["seed", "kind"]))
    del raw[field]
    return field


def bad_kind(raw: dict[str, Any], draw: st.DrawFn) -> str:
    raw["kind"] = draw(st.text(max_size=8).filter(lambda k: k != "counter") | st.integers())
    return "kind"


def bad_sweep(raw: dict[str, Any], draw: st.DrawFn) -> str:
    choice = draw(st.sampled_from(["unknown", "not_list", "empty", "kind", "bad_value"]))
    if choice == "unknown":
        path = draw(st.sampled_from(["", "world."])) + draw(
            names.filter(lambda k: k not in FIELDS + WORLD_FIELDS)
        )
        raw["sweep"] = {path: [1, 2]}
        return f"sweep.{path}"
    if choice == "not_list":
        raw["sweep"] = {"seed": draw(st.integers() | st.text(max_size=3))}
        return "sweep.seed"
    if choice == "empty":
        raw["sweep"] = {"world.scale": []}
        return "sweep.world.scale"
    if choice == "kind":
        raw["sweep"] = {"kind": ["counter"]}
        return "sweep.kind"
    raw["sweep"] = {"seed": [0, 1], "world.scale": [0.5, draw(st.floats(1, 9, exclude_min=True))]}
    return "world.scale"


MUTATIONS = [wrong_type, out_of_range, unknown_key, missing_field, bad_kind, bad_sweep]


@st.composite
def invalid_configs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    raw = draw(valid_configs())
    mutation = draw(st.sampled_from(MUTATIONS))
    return raw, mutation(raw, draw)


FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


def check_one_line_error(error: ConfigError, path: Path, field: str) -> None:
    message = str(error)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"{path}: "), message
    assert f": {field}: " in message, (field, message)


@settings(max_examples=300, **FUZZ)
@given(case=invalid_configs())
def test_fuzzed_invalid_configs_give_one_line_errors(tmp_path: Path, case: tuple) -> None:
    raw, field = case
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    check_one_line_error(info.value, path, field)


@settings(max_examples=100, **FUZZ)
@given(position=st.integers(0, 10**6), junk=st.sampled_from(["=", "[", '"', "]]", "\x00", "\n=\n"]))
def test_fuzzed_broken_toml_gives_one_line_errors(tmp_path: Path, position: int, junk: str) -> None:
    text = tomltools.dumps({**VALID, "sweep": {"seed": [1, 2]}})
    cut = position % (len(text) + 1)
    path = tmp_path / "exp.toml"
    path.write_text(text[:cut] + junk + text[cut:], encoding="utf-8")
    try:
        load_sweep(path)
    except ConfigError as error:
        assert "\n" not in str(error) and str(error).startswith(f"{path}: ")
