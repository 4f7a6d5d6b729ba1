"""Study `recovery`: does a learner recover from a mistake, or does the mistake stay with it?

He et al. (2021) argue that language models "might self-correct": a perturbed prefix leaves a
trace that fades. In a world whose traps absorb, a mistake should not fade for an imitation
learner that never saw a trap; where every token leaves a trap, it should fade at once. Per world
preset and learner, the self-recovery probe (`irlhf.metrics.recovery`: the expert's least likely
token replaces one expert token after 8, the learner continues 64 steps) gives the excess
per-step regret against the unperturbed prefix at each distance d and its half-life (the first d
at which the excess falls below half its value at d = 1; 2 is the fastest). Each seed is a
learner trained on its own demonstrations in one world (world seed 0); the summary's half-life is
the mean over seeds with a 95% t-interval (a seed whose half-life is +inf, no recovery within 64
steps, makes the mean +inf, with a note). Expected: absorbing slow, recoverable fast.
With `--world oracle` or `--world text` the same probe measures where language models sit on
that axis (`LM_DESCRIPTION`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from irlhf.algorithms.gkd import GKDConfig
from irlhf.algorithms.sft import SFTConfig
from irlhf.kinds.common import DemoSpec, PolicySpec
from irlhf.kinds.imitation import ImitationConfig
from irlhf.kinds.recovery import ProbeSpec, RecoveryConfig
from irlhf.kinds.world_spec import FlipFlopWorldSpec, OracleWorldSpec, TextWorldSpec
from irlhf.report.figures import label, new_grid, save_figure, shared_legend, style_axes
from irlhf.studies.base import Study, register_study
from irlhf.studies.common import ORACLE_KNOBS
from irlhf.studies.intervals import t_interval, verdict
from irlhf.worlds import AutomatonSpec

PRESETS = ("absorbing", "recoverable")
WORLD_SEED = 0
# profile -> (seeds, prefixes per probe)
PROFILES = {"quick": (2, 400), "default": (4, 1000), "full": (8, 2000)}
LEARNERS = {"sft": "BC (SFT)", "dagger": "DAgger"}
NO_RECOVERY = "some seed does not recover within the probe's horizon: half-life +inf"


def configs(profile: str, world: str = "flipflop") -> list[RecoveryConfig]:
    """Tabular BC and DAgger per preset and data seed, in one world (seed 0); in the oracle or
    text world, `lm_configs`."""
    if world in LM_WORLDS:
        return lm_configs(profile, world)
    seeds, n_prefixes = PROFILES[profile]
    out = []
    for preset in PRESETS:
        if world == "flipflop":
            spec: FlipFlopWorldSpec | AutomatonSpec = FlipFlopWorldSpec(
                preset=preset, horizon=128, seed=WORLD_SEED
            )
        else:
            spec = AutomatonSpec(preset=preset, horizon=128, seed=WORLD_SEED)
        for algorithm in LEARNERS:
            for seed in range(seeds):
                learner = ImitationConfig(
                    seed=seed, world=spec, algorithm=algorithm, demonstrations=DemoSpec(n=50)
                )
                probe = ProbeSpec(n_prefixes=n_prefixes)
                out.append(RecoveryConfig(seed=seed, learner=learner, probe=probe))
    return out


def summarize(df: pd.DataFrame, out: Path) -> dict:
    ok = df[df["status"] == "done"]
    kinds = ok["learner.world.kind"] if "learner.world.kind" in ok else pd.Series(dtype=object)
    if kinds.isin(LM_WORLDS).any():
        return lm_summarize(ok, str(kinds[kinds.isin(LM_WORLDS)].iloc[0]), out)
    world = "flipflop" if (kinds == "flipflop").any() else "automaton"
    rows, curves = [], {}
    for (preset, algorithm), runs in ok.groupby(["learner.world.preset", "learner.algorithm"]):
        per_seed = runs[runs["metric"] == "half_life_regret"].set_index("seed")["value"]
        excess = runs[runs["metric"] == "excess_regret"]
        curves[(preset, algorithm)] = excess.groupby("d")["value"].mean()
        note = None
        if np.isinf(per_seed.to_numpy()).any():
            mean = low = high = float("inf")
            note = NO_RECOVERY
        else:
            mean, low, high = t_interval(per_seed.to_numpy())
        undefined = runs["seed"].nunique() - len(per_seed)
        if undefined:
            note = f"{undefined} seed(s) with nothing to recover from (excess at d = 1 <= 0)"
        rows.append(
            {
                "world": world,
                "preset": preset,
                "learner": "tabular",
                "algorithm": algorithm,
                "half_life": mean,
                "ci_low": low,
                "ci_high": high,
                "seeds": int(len(per_seed)),
                "excess_regret_at_1": float(curves[(preset, algorithm)].iloc[0]),
                "note": note,
            }
        )
    by = {(r["preset"], r["algorithm"]): r for r in rows}
    bc_abs, bc_rec = by.get(("absorbing", "sft")), by.get(("recoverable", "sft"))
    claim = None
    if bc_abs and bc_rec:
        claim = {
            "claim": "BC's half-life is longer where traps absorb than where they do not",
            "holds": bool(bc_abs["ci_low"] > bc_rec["ci_high"]),
            "absorbing": [bc_abs["half_life"], bc_abs["ci_low"], bc_abs["ci_high"]],
            "recoverable": [bc_rec["half_life"], bc_rec["ci_low"], bc_rec["ci_high"]],
        }
    _figure(curves, out / "recovery_curves.png")
    headline = [
        {
            "name": f"recovery half-life: {LEARNERS[r['algorithm']]}, {r['preset']} ({world})",
            "value": r["half_life"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
        }
        for r in rows
    ]
    claims = []
    if bc_abs and bc_rec and claim is not None:
        a = [bc_abs[k] for k in ("half_life", "ci_low", "ci_high")]
        r = [bc_rec[k] for k in ("half_life", "ci_low", "ci_high")]
        claims.append(
            {
                "claim": claim["claim"],
                # intervals apart: absorbing's low above recoverable's high (holds) or its high
                # below recoverable's low (does not hold)
                "verdict": verdict(a[1] - r[2], a[2] - r[1]),
                "evidence": f"absorbing {a[0]:.2f} [{a[1]:.2f}, {a[2]:.2f}] vs recoverable "
                f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}] steps",
            }
        )
    return {
        "claims": claims,
        "world": world,
        "world_seed": WORLD_SEED,
        "rows": rows,
        "claim": claim,
        "headline": headline,
        "interval": "95% t-interval over data seeds of the per-seed half-lives",
    }


def _figure(curves: dict, path: Path) -> None:
    fig, axes = new_grid("Excess per-step regret after one perturbed token (mean over seeds)", 1, 2)
    for ax, preset in zip(axes, PRESETS, strict=True):
        style_axes(
            ax,
            f"{preset} traps",
            label("distance after the perturbation d", "tokens"),
            label("excess regret", "reward units per step"),
        )
        for (p, algorithm), curve in sorted(curves.items()):
            if p == preset:
                ax.plot(curve.index, curve.to_numpy(), label=LEARNERS[algorithm])
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.legend(fontsize=7)
    save_figure(fig, path)


LM_WORLDS = ("oracle", "text")
LM_DESCRIPTION = """In the oracle world (a random GPT-2 is the expert) and the text world (the
Shakespeare teacher) the self-recovery probe asks where language models sit between absorbing
and recoverable. One student per algorithm (a 2-layer, 64-wide GPT-2, seed 0) learns from the
expert's samples by BC (SFT) and, in the oracle world, also by GKD (on-policy distillation);
the expert's least likely token replaces one expert token after 8, and the student (and, as a
reference, the expert itself) continues 32 tokens. Per distance d: the excess per-step
KL(expert || student) against the unperturbed prefix (He et al.'s conditional generation
deviation), the excess gold-reward regret, and the perturbation's trace, KL between the
continuing model's next-token distributions after the clean and the perturbed prefix on the
same continuation (for the expert, whose excess KL is 0 by construction, this is how fast it
forgets the perturbation). Each curve's half-life (first d below half its value at d = 1; 2 is
the fastest) has a 95% percentile-bootstrap interval over prefixes; a half-life with nothing
to recover from (the curve <= 0 at d = 1, e.g. a regret the perturbation does not raise) is
not a row but a note."""
# world -> profile -> (prefixes probed, demonstrations, SFT steps, GKD steps (0: no GKD arm))
LM_PROFILES = {
    "oracle": {
        "quick": (400, 256, 150, 100),
        "default": (2000, 512, 300, 200),
        "full": (4000, 1024, 600, 400),
    },
    "text": {
        "quick": (96, 128, 100, 0),
        "default": (256, 256, 200, 0),
        "full": (1024, 512, 600, 300),
    },
}
LM_PROBE = ProbeSpec(position=8, k=1, horizon_after=32, perturbation="unlikely")
"""The probe in the LM worlds (its `n_prefixes` comes from the profile)."""
LM_STUDENT = PolicySpec(kind="causal_lm", n_layer=2, n_embd=64)
LM_LEARNERS = {"sft": "BC (SFT)", "gkd": "GKD", "expert": "the expert itself"}
MEASURES = {
    "kl": "excess KL(expert || learner)",
    "trace": "trace KL(clean || perturbed)",
    "regret": "excess gold regret",
}


def lm_configs(profile: str, world: str) -> list[RecoveryConfig]:
    """The BC student, the GKD student (where the profile has GKD steps) and the expert as its
    own continuer, in one oracle world (seed 0) or the text world; the world's horizon is the
    probe's prefix plus its continuation."""
    n_prefixes, n_demos, sft_steps, gkd_steps = LM_PROFILES[world][profile]
    horizon = LM_PROBE.position + LM_PROBE.k + LM_PROBE.horizon_after
    spec: OracleWorldSpec | TextWorldSpec = (
        OracleWorldSpec(horizon=horizon, seed=WORLD_SEED, **ORACLE_KNOBS)
        if world == "oracle"
        else TextWorldSpec(horizon=horizon, prompt_length=16)
    )
    probe = LM_PROBE.model_copy(update={"n_prefixes": n_prefixes})
    learner = ImitationConfig(
        world=spec,
        policy=LM_STUDENT,
        demonstrations=DemoSpec(n=n_demos),
        sft=SFTConfig(steps=sft_steps, batch_size=32, lr=3e-3),
        gkd=GKDConfig(steps=gkd_steps, batch_size=16, lr=3e-3, lmbda=0.5, beta=0.0)
        if gkd_steps
        else GKDConfig(),
    )
    algorithms = ["sft", "gkd"] if gkd_steps else ["sft"]
    out = [
        RecoveryConfig(learner=learner.model_copy(update={"algorithm": a}), probe=probe)
        for a in algorithms
    ]
    return out + [RecoveryConfig(learner=learner, probe=probe, continuer="expert")]


def lm_summarize(ok: pd.DataFrame, world: str, out: Path) -> dict:
    """Rows {world, preset, learner, algorithm, measure, half_life, ci_low, ci_high} per run
    and measure with a defined half-life; the undefined ones as notes."""
    if "continuer" in ok:
        expert = ok["continuer"] == "expert"
    else:
        expert = pd.Series(False, index=ok.index)
    ok = ok.assign(arm=ok["learner.algorithm"].where(~expert, "expert"))
    rows, notes, curves = [], [], {}
    for (arm, seed), run in ok.groupby(["arm", "seed"], sort=False):
        value = run.groupby("metric")["value"].first()
        for measure in MEASURES:
            if f"half_life_{measure}" not in value:
                continue
            rows.append(
                {
                    "world": world,
                    "preset": "default",
                    "learner": "expert" if arm == "expert" else "causal_lm",
                    "algorithm": arm,
                    "measure": measure,
                    "seed": int(seed),
                    "half_life": float(value[f"half_life_{measure}"]),
                    "ci_low": float(value[f"half_life_{measure}_ci_low"]),
                    "ci_high": float(value[f"half_life_{measure}_ci_high"]),
                }
            )
        for name in ("excess_kl", "trace_kl", "excess_regret"):
            curve = run[run["metric"] == name].set_index("d")["value"]
            curves[(name, arm)] = curve.sort_index()
        for note in run.loc[run["metric"] == "recovery_note", "note"]:
            notes.append({"algorithm": arm, "seed": int(seed), "note": note})
    order = list(LM_LEARNERS)
    rows.sort(key=lambda r: (order.index(r["algorithm"]), list(MEASURES).index(r["measure"])))
    _lm_figure(curves, world, out / f"recovery_curves_{world}.png")
    headline = [
        {
            "name": f"{world} world, {LM_LEARNERS[r['algorithm']]}: half-life of the "
            f"{MEASURES[r['measure']]} (tokens)",
            "value": r["half_life"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
        }
        for r in rows
    ]
    return {
        "claims": _lm_claims(rows),
        "world": world,
        "world_seed": WORLD_SEED,
        "rows": rows,
        "notes": notes,
        "headline": headline,
        "probe": LM_PROBE.model_dump(exclude={"n_prefixes"}),
        "interval": "95% percentile bootstrap over the probed prefixes (one learner per row)",
    }


def _lm_claims(rows: list[dict]) -> list[dict]:
    """Per language-model student: it recovers from the perturbed token within the probe's D
    tokens, i.e. the interval of its excess-KL half-life lies below D (`intervals.verdict` on
    D - half-life; an undefined half-life has no row and no claim)."""
    D = LM_PROBE.horizon_after
    out = []
    for r in rows:
        if r["learner"] != "causal_lm" or r["measure"] != "kl":
            continue
        out.append(
            {
                "claim": f"{LM_LEARNERS[r['algorithm']]} recovers from the perturbed token within "
                f"D = {D} tokens (excess-KL half-life below D)",
                "verdict": verdict(D - r["ci_high"], D - r["ci_low"]),
                "evidence": f"half-life {r['half_life']:g} [{r['ci_low']:g}, {r['ci_high']:g}] "
                f"tokens, seed {r['seed']}",
            }
        )
    return out


def _lm_figure(curves: dict, world: str, path: Path) -> None:
    fig, axes = new_grid(f"Self-recovery in the {world} world after one unlikely token", 1, 3)
    panels = [
        ("excess_kl", "excess KL(expert || learner)", label("excess KL", "nats per step")),
        ("trace_kl", "the perturbation's trace", label("KL(clean || perturbed)", "nats per step")),
        ("excess_regret", "excess gold-reward regret", label("excess regret", "reward per step")),
    ]
    for ax, (name, title, ylabel) in zip(axes, panels, strict=True):
        style_axes(ax, title, label("distance after the perturbation d", "tokens"), ylabel)
        for i, arm in enumerate(LM_LEARNERS):
            curve = curves.get((name, arm))
            if curve is not None and np.isfinite(curve.to_numpy()).all():
                ax.plot(curve.index, curve.to_numpy(), color=f"C{i}", label=LM_LEARNERS[arm])
        ax.axhline(0.0, color="grey", linewidth=0.8)
    shared_legend(fig, axes)
    save_figure(fig, path)


STUDY = Study(
    name="recovery",
    title="Self-recovery: how long a mistake stays with the learner",
    description=__doc__.split("\n\n", 1)[1].strip(),
    configs=configs,
    summarize=summarize,
    worlds=("flipflop", "automaton", *LM_WORLDS),
    descriptions=dict.fromkeys(LM_WORLDS, LM_DESCRIPTION),
    titles=dict.fromkeys(
        LM_WORLDS, "Self-recovery: where language models sit between absorbing and recoverable"
    ),
    reproduce_worlds=("flipflop", *LM_WORLDS),
)
register_study(STUDY)
