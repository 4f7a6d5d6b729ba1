"""Study `compounding` in the flip-flop trap world (`irlhf study compounding --world flipflop`):
tabular and neural learners.

Tabular BC (add-0.1 smoothing), DAgger (8 rounds x 50 roll-outs) and BC at DAgger's budget
(`sft_equal`) in the `absorbing` and `recoverable` flip-flop presets (`irlhf.worlds.flipflop`),
exact regret J_L(expert) - J_L(model) at every prefix length and its power-law exponent over
seeds. One world per preset (world seed 0) for every run: only the data seed (demonstrations,
roll-outs, labels) varies, so the interval is over data, not over worlds (`world_seed` in the
summary). Smoothing sensitivity (issue 14, item 6): extra BC arms with add-0.01 and add-1.0
smoothing (`sft_smooth_0.01`, `sft_smooth_1`), summarised in the `smoothing` table beside the
add-0.1 arm. Expected: BC compounds in the absorbing world (the prototype: exponent 1.51 at
V = 16) and not in the recoverable one (1.06); DAgger ~1 in both.

Neural learners (`learner = "causal_lm"`): a 2 x 64 LLaMA student (rotary positions: it can
represent the expert in both modes, `irlhf.metrics.realizability`) that sees tokens only and
acts with a known error of 2 % (`policy.act_epsilon`: (1 - 0.02) network + 0.02 uniform, in
training roll-outs and evaluation alike; ~2.5e-3 trap entries per good step for every learner,
so the arms differ in what they do once trapped, not in how often they fall in). Without it a
learner's entry rate is its leftover mass on the trap tokens (~2.6e-4 per step in the
prototype), so DAgger's and GKD's roll-outs would hardly ever enter a trap. Horizon 64, fitted
over L = 8..64; regret by the performance-difference lemma (`irlhf.metrics.advantage`). Arms
(`neural_arms`, equal budgets): BC on 1,024 demonstrations, 300 steps; GKD (lmbda 0.5, forward
KL) 300 steps; DAgger with beta_r = 0 after the BC round (Ross et al.'s practical choice
beta_i = I(i = 1): the learner's own roll-outs, so a trapped learner's stay is labelled), 2
rounds, roll-outs sized to GKD's expected oracle queries, 300 steps in all; BC at that budget
(`sft_equal`: 1,024 + queries / 64 demonstrations, 300 steps). Expected (Foster et al. 2024,
Rohatgi et al. 2025): a realizable BC student still compounds where traps absorb, because its
demonstrations never show the way out; DAgger and GKD, which see their own trapped states,
do not; nobody compounds where every token exits.

Two-state check (issue 14, item 6; `two_state_table`, not in the summary: it retrains the grid,
~40 s at the default profile; `python -m irlhf.studies.compounding_flipflop [profile]`): each
learner's exact trap-entry and trap-exit rates (`irlhf.metrics.traps`), the exponent of the
two-state chain they define, and whether it falls in the measured exponent's interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from irlhf.algorithms.dagger import DAggerConfig
from irlhf.algorithms.gkd import GKDConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import DemoSpec, PolicySpec
from irlhf.kinds.imitation import ImitationConfig, train
from irlhf.kinds.world_spec import FlipFlopWorldSpec, make_world
from irlhf.metrics.exposure import fit_power_law
from irlhf.metrics.traps import (
    TrapRates,
    measured_regret,
    measured_trap_occupancy,
    trap_rates,
)
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies.tabular import TabularPolicy
from irlhf.studies import flipflop_claims
from irlhf.studies.budgets import EQUAL_ARM, dagger_matching_gkd, equal_budget_demos
from irlhf.worlds import AutomatonWorld

DESCRIPTION = __doc__.split("\n\n", 1)[1].strip()
"""The claim as measured here (the report's text for the flip-flop world)."""
TITLE = "Compounding error in the flip-flop trap world: neural and tabular BC vs DAgger vs GKD"
PRESETS = ("absorbing", "recoverable")
WORLD_SEED = 0
"""The world seed of every run of the grid (the run seed is the data seed)."""
DEFAULT_SMOOTHING = SFTConfig().smoothing
SMOOTHINGS = (0.01, DEFAULT_SMOOTHING, 1.0)
"""BC's add-k smoothing levels of the sensitivity table (the add-0.1 level is the `sft` arm)."""
# profile -> (seeds, horizon)
PROFILES = {"quick": (4, 64), "default": (8, 128), "full": (20, 256)}
# profile -> (neural seeds, horizon, demonstrations, optimiser steps, Monte-Carlo samples)
NEURAL_PROFILES = {
    "quick": (2, 32, 256, 100, 256),
    "default": (4, 64, 1024, 300, 512),
    "full": (8, 64, 1024, 300, 2048),
}
NEURAL_PRESETS = {"absorbing": ("sft", "dagger", "gkd", EQUAL_ARM), "recoverable": ("sft",)}
"""The neural arms run per preset in the quick and default profiles (the recoverable control
needs BC; the full profile adds DAgger there, `FULL_PRESETS`)."""
FULL_PRESETS = {**NEURAL_PRESETS, "recoverable": ("sft", "dagger")}
STUDENT = PolicySpec(
    kind="causal_lm", arch="llama", n_layer=2, n_embd=64, n_head=4, act_epsilon=0.02
)
"""The neural student: 2 x 64 LLaMA, 4 heads, a 2 % acting error."""


def smooth_arm(smoothing: float) -> str:
    """The arm name of BC at a non-default smoothing: "sft_smooth_0.01"."""
    return f"sft_smooth_{smoothing:g}"


def configs(profile: str) -> list[ImitationConfig]:
    """The tabular grid (per preset, BC, DAgger, BC at DAgger's budget and BC at the other
    smoothings, seeds 0..n-1 as data seeds in the world of seed `WORLD_SEED`), then the neural
    one (`neural_configs`)."""
    seeds, horizon = PROFILES[profile]
    n_equal = equal_budget_demos(50, DAggerConfig().expected_queries(horizon), horizon)
    arms: list[tuple[str, int, float]] = [
        ("sft", 50, DEFAULT_SMOOTHING),
        ("dagger", 50, DEFAULT_SMOOTHING),
        ("sft", n_equal, DEFAULT_SMOOTHING),
        *(("sft", 50, k) for k in SMOOTHINGS if k != DEFAULT_SMOOTHING),
    ]
    out = []
    for preset in PRESETS:
        world = FlipFlopWorldSpec(preset=preset, horizon=horizon, seed=WORLD_SEED)
        for algorithm, n, smoothing in arms:
            for seed in range(seeds):
                out.append(
                    ImitationConfig(
                        seed=seed,
                        world=world,
                        algorithm=algorithm,
                        demonstrations=DemoSpec(n=n),
                        sft=SFTConfig(smoothing=smoothing),
                    )
                )
        for algorithm in ("sft", "dagger"):  # other worlds, data seed 0 (`world_seed_table`)
            for world_seed in range(1, seeds):
                out.append(
                    ImitationConfig(
                        seed=0,
                        world=world.model_copy(update={"seed": world_seed}),
                        algorithm=algorithm,
                        demonstrations=DemoSpec(n=50),
                    )
                )
    return out + neural_configs(profile)


def split_world_seeds(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the grid's runs in the world of seed `WORLD_SEED`, the runs of data seed 0 in every
    world): the first gives every table but `world_seeds`, the second that table's
    between-world intervals."""
    world_seed = runs["world.seed"].astype(int)
    return runs[world_seed == WORLD_SEED], runs[runs["seed"].astype(int) == 0]


def neural_arms(profile: str) -> dict[str, dict]:
    """Arm -> the fields of its `ImitationConfig` (algorithm, demonstrations, sft, dagger, gkd):
    BC, DAgger, GKD and BC at their budget (module docstring)."""
    _, horizon, n, steps, _ = NEURAL_PROFILES[profile]
    sft = SFTConfig(steps=steps, batch_size=32, lr=3e-3)
    gkd = GKDConfig(steps=steps, batch_size=32, lr=3e-3, lmbda=0.5, beta=0.0)
    dagger = dagger_matching_gkd(gkd, n, horizon, rounds=2, fit_steps=steps // 3, beta0=0.0)
    n_equal = equal_budget_demos(n, gkd.expected_queries(n, horizon), horizon)
    common = {"sft": sft, "dagger": dagger, "gkd": gkd}
    return {
        "sft": {"algorithm": "sft", "demonstrations": DemoSpec(n=n), **common},
        "dagger": {"algorithm": "dagger", "demonstrations": DemoSpec(n=n), **common},
        "gkd": {"algorithm": "gkd", "demonstrations": DemoSpec(n=n), **common},
        EQUAL_ARM: {"algorithm": "sft", "demonstrations": DemoSpec(n=n_equal), **common},
    }


def neural_configs(
    profile: str, policy: PolicySpec = STUDENT, presets: dict[str, tuple[str, ...]] | None = None
) -> list[ImitationConfig]:
    """The neural grid: per preset its arms (`NEURAL_PRESETS`), data seeds 0..n-1, the world
    of seed `WORLD_SEED`, the student `policy`."""
    seeds, horizon, _, _, mc = NEURAL_PROFILES[profile]
    arms = neural_arms(profile)
    out = []
    if presets is None:
        presets = FULL_PRESETS if profile == "full" else NEURAL_PRESETS
    for preset, names in presets.items():
        world = FlipFlopWorldSpec(preset=preset, horizon=horizon, seed=WORLD_SEED)
        for name in names:
            for seed in range(seeds):
                out.append(
                    ImitationConfig(
                        seed=seed, world=world, policy=policy, mc_samples=mc, **arms[name]
                    )
                )
    return out


def relabel_smoothing(runs: pd.DataFrame, arms: pd.Series) -> pd.Series:
    """`arms` with BC runs at a non-default smoothing renamed `smooth_arm(k)`."""
    if "sft.smoothing" not in runs:
        return arms
    k = runs["sft.smoothing"].astype(float)
    other = (runs["algorithm"] == "sft") & (k != DEFAULT_SMOOTHING)
    return arms.where(~other, k.map(smooth_arm))


def smoothing_table(rows: list[dict]) -> list[dict]:
    """The BC rows at every smoothing level (from the exponent rows of all arms)."""
    names = {("sft" if k == DEFAULT_SMOOTHING else smooth_arm(k)): k for k in SMOOTHINGS}
    keys = ("world", "learner", "exponent", "ci_low", "ci_high", "seeds", "regret_at_max_L")
    return [
        {"smoothing": names[r["algorithm"]], "algorithm": "sft", **{k: r[k] for k in keys}}
        for r in rows
        if r["algorithm"] in names and r["learner"] == "tabular"  # add-k is a table's knob
    ]


def extra_summary(
    rows: list[dict], ok: pd.DataFrame, curves: dict, every_world: pd.DataFrame
) -> dict:
    """The flip-flop summary's own keys (`irlhf.studies.flipflop_claims`): the smoothing table,
    paired regret gaps of the neural arms, the neural two-state table, the world-vs-data seed
    table, the claims with verdicts and the seeds' meaning. (The tabular two-state table,
    `two_state_table`, retrains the grid: ~40 s for the default profile, so it is not part of
    the summary.)"""
    gaps = flipflop_claims.paired_gaps(curves)
    return {
        "claims": flipflop_claims.claims(rows, gaps)
        + flipflop_claims.claims(rows, [], learner="tabular"),
        "paired_gaps": gaps,
        "neural_two_state": flipflop_claims.neural_two_state(ok, rows),
        "world_seeds": flipflop_claims.world_seed_table(every_world, ok, fit_lengths),
        "smoothing": smoothing_table(rows),
        "world_seed": WORLD_SEED,
        "seeds_note": f"every run is in the world of seed {WORLD_SEED} (one world per preset); "
        "the seeds are data seeds (demonstrations, roll-outs, labels), so the intervals are over "
        "data only",
        "smoothing_note": "tabular BC on 50 demonstrations with add-k smoothing, k in "
        f"{list(SMOOTHINGS)} (k = {DEFAULT_SMOOTHING:g} is the `sft` arm); same seeds and world",
        "keys": {
            "claims": "issue 14's claims for neural students: claim, verdict (holds / does not "
            "hold / inconclusive, from the 95% interval against the bound), evidence",
            "paired_gaps": "neural absorbing arms: regret at the longest L of `minus` minus that "
            "of `arm`, per data seed (same demonstrations), mean and 95% t-interval",
            "neural_two_state": "neural learners: seed means of the Monte-Carlo trap rates "
            "(entry_rate p, exit_rate q per step, trap_cost c, good_shortfall eps), the "
            "two-state chain's exponent (predicted_exponent) against the measured interval",
            "world_seeds": "tabular BC and DAgger, seeds_vary = data (one world, data seeds) or "
            "world (world seeds, data seed 0): exponent and regret_at_max_L with intervals",
        },
    }


TWO_STATE_NOTE = (
    "per arm, the learners of the profile's grid rebuilt deterministically (same "
    "configs, `irlhf.kinds.imitation.train`); entry_rate p / exit_rate q are the exact per-step "
    "trap-entry / trap-exit probabilities averaged over the learner's own good / trap occupancy, "
    "trap_cost c and good_shortfall eps the per-step reward lost vs the expert in a trap / in "
    "good states (seed means; `irlhf.metrics.traps`). predicted_exponent: the power law of the "
    "two-state chain's regret sum_t [c P_t + eps (1 - P_t)], P_t = p/(p+q) (1 - (1-p-q)^t), per "
    "seed, fitted over seeds like measured_exponent (the exact regret) on the same lengths; "
    "predicts = predicted_exponent inside the measured 95% interval; occupancy_gap = max_t "
    "|P_t(model) - P_t(exact)|, seed mean"
)


def arm_of(config: ImitationConfig) -> str:
    """The summary's arm name of a config: sft, dagger, gkd, sft_equal (BC with more than its
    learner's usual demonstrations: 50 for a table, a neural profile's count for a network) or
    sft_smooth_<k>."""
    if config.algorithm != "sft":
        return config.algorithm
    usual = {50} if config.policy.kind == "tabular" else {p[2] for p in NEURAL_PROFILES.values()}
    if config.demonstrations.n not in usual:
        return "sft_equal"
    k = config.sft.smoothing
    return "sft" if k == DEFAULT_SMOOTHING else smooth_arm(k)


def fit_lengths(horizon: int) -> np.ndarray:
    """The fitted prefix lengths 8, 16, ..., horizon (as the compounding summary's)."""
    return 2 ** np.arange(3, int(np.log2(horizon)) + 1)


def two_state_table(profile: str) -> list[dict]:
    """The two-state rows of the flip-flop grid of `profile` (`two_state_rows`)."""
    return two_state_rows([c for c in configs(profile) if c.policy.kind == "tabular"])


def two_state_rows(grid: Sequence[ImitationConfig]) -> list[dict]:
    """Per (world preset, arm) of tabular configs: train each learner (deterministic), its trap
    rates and the two-state model's exponent against the measured one (`TWO_STATE_NOTE`)."""
    groups: dict[tuple[str, str], list[tuple[TrapRates, np.ndarray, float]]] = {}
    worlds: dict[object, AutomatonWorld] = {}
    notes: dict[tuple[str, str], str] = {}
    for config in grid:
        world = worlds.get(config.world)
        if world is None:
            world = worlds[config.world] = _automaton(config)
        policy, _ = train(config, world)
        table = policy if isinstance(policy, TabularPolicy) else None
        if table is None:
            raise ValueError("two_state_rows needs tabular learners")
        key = (str(getattr(config.world, "preset", "custom")), arm_of(config))
        try:
            rates = trap_rates(world, table)
        except UndefinedMetric as error:
            notes[key] = f"a seed left out: {error}"
            continue
        gap = float(np.abs(rates.trap_occupancy() - measured_trap_occupancy(world, table)).max())
        groups.setdefault(key, []).append((rates, measured_regret(world, table), gap))
    return [_row(key, group, notes.get(key)) for key, group in groups.items()]


def two_state_main(profile: str = "default") -> None:
    """Print the flip-flop grid's two-state table (`python -m irlhf.studies.compounding_flipflop
    [profile]`)."""
    keys = ["entry_rate", "exit_rate", "first_step_entry_rate", "predicted_exponent"]
    keys += ["measured_exponent", "measured_ci_low", "measured_ci_high", "occupancy_gap"]
    print("world algorithm " + " ".join(keys) + " predicts")
    for row in two_state_table(profile):
        values = " ".join(f"{row[k]:.4g}" for k in keys)
        print(f"{row['world']} {row['algorithm']} {values} {row['predicts']}")


def _automaton(config: ImitationConfig) -> AutomatonWorld:
    world = make_world(config.world)
    if not isinstance(world, AutomatonWorld):
        raise ValueError("two_state_rows needs an automaton or flip-flop world")
    return world


def _row(key: tuple[str, str], group: list, note: str | None) -> dict:
    rates = [g[0] for g in group]
    lengths = fit_lengths(rates[0].horizon)
    predicted = np.stack([r.regret()[lengths - 1] for r in rates])
    measured = np.stack([g[1][lengths - 1] for g in group])
    fits = {}
    for name, values in (("predicted", predicted), ("measured", measured)):
        try:
            fit = fit_power_law(lengths, values)
            fits[name] = (fit.exponent, fit.ci_low, fit.ci_high)
        except ValueError as error:  # a mean regret <= 0 at some length: no power law
            fits[name] = (math.nan, math.nan, math.nan)
            note = f"{note + '; ' if note else ''}no {name} power law: {error}"
    (pe, plo, phi), (me, mlo, mhi) = fits["predicted"], fits["measured"]

    def mean(field: str) -> float:
        return float(np.mean([getattr(r, field) for r in rates]))

    return {
        "world": key[0],
        "algorithm": key[1],
        "seeds": len(group),
        "entry_rate": mean("entry_rate"),
        "exit_rate": mean("exit_rate"),
        "trap_cost": mean("trap_cost"),
        "good_shortfall": mean("good_shortfall"),
        "predicted_exponent": pe,
        "predicted_ci_low": plo,
        "predicted_ci_high": phi,
        "measured_exponent": me,
        "measured_ci_low": mlo,
        "measured_ci_high": mhi,
        "first_step_entry_rate": mean("first_step_entry_rate"),
        "predicts": bool(mlo <= pe <= mhi),
        "occupancy_gap": float(np.mean([g[2] for g in group])),
        "note": note,
    }


if __name__ == "__main__":
    import sys

    two_state_main(*sys.argv[1:2])
