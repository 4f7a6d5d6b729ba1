"""Self-recovery: how fast a learner returns to its normal behaviour after a perturbed prefix.

Following He et al. 2021 ("Exposure bias versus self-recovery", arXiv 1905.10617), who feed a
model a ground-truth prefix with some tokens replaced (random tokens, or tokens the data make
unlikely) and compare its continuation with the one from the clean prefix. Here, in any world
with an exact expert:

1. draw `n_prefixes` expert prefixes of `position + k` action tokens (after the world's prompt);
2. the *perturbed* prefix replaces the last k of them (positions position .. position + k - 1)
   by a perturbation: `"random"`, uniform random action tokens, or `"unlikely"`, at each of the
   k positions the token the expert finds least likely there (argmin of its distribution at the
   perturbed prefix so far); the *unperturbed* prefix keeps the expert's k tokens;
3. the learner continues both prefixes for D = `horizon_after` steps (with common random numbers:
   the same uniforms / the same sampling seed for both arms of a prefix, which changes neither
   arm's distribution but makes their difference far less noisy);
4. at each distance d = 1..D after the perturbation (the d-th token the learner emits) we read
   the per-step KL(expert || learner) at the learner's own prefix (exact at each sampled prefix)
   and the true reward of the emitted token. Per prefix, the *excess* is perturbed minus
   unperturbed: excess_kl[d] = E[KL_pert,d - KL_unpert,d], excess_regret[d] = E[r_unpert,d -
   r_pert,d] (per-step regret against any fixed reference, e.g. the expert's, differs between
   the arms by exactly this: the reference cancels). Means over prefixes, with standard errors
   of the paired differences; float64 throughout. excess_kl is He et al.'s conditional
   generation deviation after l_gap = d - 1 generated tokens (their CGD_gap, with f_div = KL):
   the learner's divergence from the data distribution after a distorted prefix, here minus the
   same after the undistorted one;
5. the perturbation's *trace* in the learner itself: along the perturbed arm's continuation y,
   trace_kl[d] = E[KL(learner(. | x, y_<d) || learner(. | x~, y_<d))], x the unperturbed and
   x~ the perturbed prefix: how much the perturbed token still changes what the learner
   predicts d steps later (0 once it is forgotten). It needs no expert, so it is defined for
   the expert itself as the learner, where excess_kl is exactly 0: a language model keeps the
   perturbation in its context, and whether the *expert* forgets it is this trace.

The recovery half-life of a curve e is the first d with e[d] < e[1] / 2 (so 2 is the fastest
possible recovery); +inf with a note if that never happens within D. It is undefined (reading it
raises `UndefinedMetric`) when e[1] <= 0: nothing to recover from, e.g. the expert as its own
learner has excess KL exactly 0 at every d. Its interval is a percentile bootstrap over prefixes
(resamples whose e*[1] <= 0 have no half-life and are left out, counted in the notes).

A tabular policy in an `AutomatonWorld` continues by stepping the latent state; any other
learner (a `Policy`: `next_token_logits` and `sample`) continues with `policy.sample` from the
prompt plus the prefix, and is scored on Sequences whose prompt is the world's prompt and whose
completion is prefix + perturbation + continuation (only the continuation is read). No array
returned holds nan: a KL of +inf (the learner gives probability 0 to a token the expert emits)
makes the excess +inf (or -inf when only the unperturbed arm is infinite) with a note and leaves
the KL half-life undefined; infinite KL in both arms at the same d raises `UndefinedMetric`.
A trace of +inf (the learner rules out after the perturbation a token it allows after the
clean prefix) is +inf with a note and no trace half-life.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
from torch import Tensor

from irlhf.metrics.exposure import _kl_rows, _ranges, float64_table
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy, World
from irlhf.types import Sequences
from irlhf.worlds.automaton import AutomatonWorld

Perturbation = Literal["random", "unlikely"]
PERTURBATIONS = ("random", "unlikely")


@dataclass(frozen=True)
class HalfLife:
    """A recovery half-life (first d with excess < half the excess at d = 1; +inf if none
    within D) and its bootstrap percentile interval (ends may be +inf, never nan)."""

    value: float
    ci_low: float
    ci_high: float
    undefined_resamples: int = 0
    """Bootstrap resamples whose excess at d = 1 was <= 0 (left out of the interval)."""


@dataclass(frozen=True)
class SelfRecovery:
    """Per distance d = 1..D after the perturbation (index d - 1). No array holds nan.

    `half_life_kl` / `half_life_regret` / `half_life_trace` (and their `_ci`) raise
    `UndefinedMetric` where the curve at d = 1 is <= 0 (nothing to recover from) or infinite;
    `kl_half_life` / `regret_half_life` / `trace_half_life` hold the `HalfLife` or None."""

    excess_kl: np.ndarray
    """E[KL_pert,d - KL_unpert,d]: per-step KL(expert || learner), perturbed minus unperturbed
    (nats; +-inf where an arm's KL is infinite)."""
    excess_kl_se: np.ndarray
    """Standard error of excess_kl over prefixes (+inf where excess_kl is infinite)."""
    excess_regret: np.ndarray
    """E[r_unpert,d - r_pert,d]: per-step true reward lost to the perturbation (reward units)."""
    excess_regret_se: np.ndarray
    trace_kl: np.ndarray
    """E[KL(learner(. | x, y_<d) || learner(. | x~, y_<d))] along the perturbed arm's
    continuation y: the perturbation's trace in the learner (nats; +inf where infinite)."""
    trace_kl_se: np.ndarray
    kl_perturbed: np.ndarray
    """E[KL_d] along the perturbed arm (nats, may be +inf)."""
    kl_unperturbed: np.ndarray
    reward_perturbed: np.ndarray
    """E[r_d] along the perturbed arm (reward units)."""
    reward_unperturbed: np.ndarray
    kl_half_life: HalfLife | None
    regret_half_life: HalfLife | None
    trace_half_life: HalfLife | None
    n_prefixes: int
    position: int
    k: int
    perturbation: str
    notes: tuple[str, ...] = ()

    @property
    def distances(self) -> np.ndarray:
        return np.arange(1, len(self.excess_kl) + 1)

    @property
    def half_life_kl(self) -> float:
        return self._half_life("kl").value

    @property
    def half_life_kl_ci(self) -> tuple[float, float]:
        h = self._half_life("kl")
        return h.ci_low, h.ci_high

    @property
    def half_life_regret(self) -> float:
        return self._half_life("regret").value

    @property
    def half_life_regret_ci(self) -> tuple[float, float]:
        h = self._half_life("regret")
        return h.ci_low, h.ci_high

    @property
    def half_life_trace(self) -> float:
        return self._half_life("trace").value

    @property
    def half_life_trace_ci(self) -> tuple[float, float]:
        h = self._half_life("trace")
        return h.ci_low, h.ci_high

    def _half_life(self, name: str) -> HalfLife:
        h = {"kl": self.kl_half_life, "regret": self.regret_half_life}.get(
            name, self.trace_half_life
        )
        if h is None:
            raise UndefinedMetric(
                f"the {name} recovery half-life is undefined: {'; '.join(self.notes)}"
            )
        return h


def half_life(curve: np.ndarray) -> float:
    """First d (1-based) with curve[d] < curve[1] / 2, +inf if none. Needs curve[1] > 0."""
    if not curve[0] > 0:
        raise UndefinedMetric(
            f"no half-life: the excess at d = 1 is {curve[0]} <= 0 (nothing to recover from)"
        )
    below = np.nonzero(curve < curve[0] / 2)[0]
    return float(below[0] + 1) if len(below) else math.inf


def half_life_interval(curve: np.ndarray, replicates: np.ndarray, confidence: float) -> HalfLife:
    """Half-life of `curve` [D] (needs curve[1] > 0) with the percentile interval of the
    half-lives of its bootstrap `replicates` [n_boot, D]; replicates whose value at d = 1 is
    not > 0 have no half-life and are left out (counted in `undefined_resamples`)."""
    n_boot = len(replicates)
    value = half_life(curve)
    defined = replicates[:, 0] > 0
    lives = np.array([half_life(c) for c in replicates[defined]])
    if len(lives) == 0:
        return HalfLife(value, -math.inf, math.inf, n_boot)
    alpha = (1 - confidence) / 2
    lo = float(np.quantile(lives, alpha, method="lower"))  # no interpolation: inf stays inf
    hi = float(np.quantile(lives, 1 - alpha, method="higher"))
    return HalfLife(value, lo, hi, int(n_boot - defined.sum()))


def _bootstrap_half_life(
    diffs: np.ndarray, rng: np.random.Generator, n_boot: int, confidence: float
) -> HalfLife:
    """Half-life of the mean curve of per-prefix differences [N, D], with a percentile
    bootstrap interval over prefixes."""
    N = len(diffs)
    weights = rng.multinomial(N, np.full(N, 1.0 / N), size=n_boot)  # (n_boot, N)
    return half_life_interval(diffs.mean(axis=0), weights @ diffs / N, confidence)


def self_recovery(
    world: World,
    learner: TabularPolicy | Policy,
    *,
    position: int,
    k: int = 1,
    horizon_after: int = 16,
    n_prefixes: int = 1000,
    perturbation: Perturbation = "random",
    generator: torch.Generator,
    n_boot: int = 1000,
    confidence: float = 0.95,
    batch_size: int = 256,
) -> SelfRecovery:
    """The self-recovery probe (module docstring) of `learner` in `world`: perturb k expert
    tokens after `position` expert tokens, continue `horizon_after` steps, and read the excess
    per-step KL and regret at each distance with their half-lives."""
    if position < 0 or k < 1 or horizon_after < 1:
        raise ValueError(
            f"need position >= 0, k >= 1, horizon_after >= 1 (got {position}, {k}, {horizon_after})"
        )
    if n_prefixes < 2:
        raise ValueError(f"n_prefixes must be >= 2 for the standard errors (got {n_prefixes})")
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
    tabular = isinstance(learner, TabularPolicy)
    if tabular and not isinstance(world, AutomatonWorld):
        raise ValueError("a tabular learner needs an AutomatonWorld (it acts on latent states)")
    parts: list[tuple[Tensor, ...]] = []
    for start in range(0, n_prefixes, batch_size):
        n = min(batch_size, n_prefixes - start)
        clean = _expert_prefixes(world, n, position + k, generator)
        perturbed = _perturb(world, clean, position, k, perturbation, generator)
        seed = int(torch.randint(2**62, (1,), generator=generator))
        # the perturbed arm also reads the trace (its continuation after the clean prefix)
        arms = [
            _continue_tabular(
                cast(AutomatonWorld, world),
                cast(TabularPolicy, learner),
                prefix,
                horizon_after,
                torch.Generator().manual_seed(seed),
                other,
            )
            if tabular
            else _continue_neural(
                world,
                cast(Policy, learner),
                prefix,
                horizon_after,
                torch.Generator().manual_seed(seed),
                other,
            )
            for prefix, other in ((perturbed, clean), (clean, None))
        ]
        (kl_pert, r_pert, trace_pert), (kl_clean, r_clean, _) = arms
        parts.append((kl_pert, kl_clean, r_pert, r_clean, cast(Tensor, trace_pert)))
    kl_p, kl_u, r_p, r_u, trace = (torch.cat([p[i] for p in parts]).numpy() for i in range(5))
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    return _summarise(
        kl_p, kl_u, r_p, r_u, rng, n_boot, confidence, position, k, str(perturbation), trace
    )


def _expert_prefixes(world: World, n: int, length: int, generator: torch.Generator) -> Sequences:
    """n expert prefixes of `length` action tokens after the world's prompt."""
    if isinstance(world, AutomatonWorld):
        return world.rollout(world.expert, n, generator, length)
    prompts = world.sample_prompts(n, generator)
    if length == 0:
        return Sequences.from_prompt_and_completion(prompts, prompts[:, :0])
    demonstrator = cast(Policy, world.demonstrator())
    return demonstrator.sample(prompts.to(demonstrator.device), length, generator).to("cpu")


def _perturb(
    world: World,
    clean: Sequences,
    position: int,
    k: int,
    perturbation: str,
    generator: torch.Generator,
) -> Sequences:
    """The clean prefixes with completion tokens position .. position + k - 1 replaced."""
    P = clean.prompt_length
    tokens = clean.tokens.clone()
    n = len(tokens)
    if perturbation == "random":
        tokens[:, P + position : P + position + k] = torch.randint(
            world.vocab_size, (n, k), generator=generator
        )
    else:
        for j in range(position, position + k):
            so_far = Sequences.from_prompt_and_completion(tokens[:, :P], tokens[:, P : P + j])
            probs = world.next_demonstrator_probs(so_far).double()
            tokens[:, P + j] = probs.argmin(dim=-1).cpu()
    return Sequences.from_prompt_and_completion(tokens[:, :P], tokens[:, P:])


def _continue_tabular(
    world: AutomatonWorld,
    learner: TabularPolicy,
    prefix: Sequences,
    steps: int,
    generator: torch.Generator,
    clean: Sequences | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """[n, steps] KL(expert || learner) at each visited state and the reward of each emitted
    token, stepping the latent state from the end of the prefix. Inverse-CDF sampling from
    `generator`'s uniforms, so two arms with equal seeds share their randomness. With `clean`
    (the unperturbed prefixes) also the trace: KL(learner(. | s_clean) || learner(. | s)), the
    clean prefix's state stepped by the same emitted tokens."""
    if tuple(learner.probs.shape) != (world.n_states, world.vocab_size):
        raise ValueError(
            f"learner table must be [{world.n_states}, {world.vocab_size}] for this world, "
            f"got {tuple(learner.probs.shape)}"
        )
    table = float64_table(learner)
    cdf = table.cumsum(dim=1)
    kl_state = _kl_rows(float64_table(world.expert), table)  # (S,)
    state = _end_states(world, prefix)
    other = _end_states(world, clean) if clean is not None else state
    n = len(state)
    kl = torch.empty(n, steps, dtype=torch.float64)
    rewards = torch.empty(n, steps, dtype=torch.float64)
    trace = torch.empty(n, steps, dtype=torch.float64)
    for d in range(steps):
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        row = cdf[state]
        action = (row < u.unsqueeze(1) * row[:, -1:]).sum(dim=1).clamp_max(world.vocab_size - 1)
        kl[:, d] = kl_state[state]
        rewards[:, d] = world.reward_table[state, action]
        trace[:, d] = _kl_rows(table[other], table[state])
        state = world.transition[state, action]
        other = world.transition[other, action]
    return kl, rewards, trace if clean is not None else None


def _end_states(world: AutomatonWorld, prefix: Sequences) -> Tensor:
    """[n] the latent state after each prefix (its first token is the start-state token)."""
    state = prefix.tokens[:, 0] - world.vocab_size
    for t in range(1, prefix.length):
        state = world.transition[state, prefix.tokens[:, t]]
    return state


def _continue_neural(
    world: World,
    learner: Policy,
    prefix: Sequences,
    steps: int,
    generator: torch.Generator,
    clean: Sequences | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """[n, steps] KL(expert || learner) at each of the learner's own prefixes and the true
    reward of each token it emits, continuing the prompt + prefix with `learner.sample`. With
    `clean` also the trace: KL(learner(. | clean, y_<d) || learner(. | prefix, y_<d)) on the
    same continuation y."""
    P = prefix.prompt_length
    with torch.inference_mode():
        out = learner.sample(prefix.tokens.to(learner.device), steps, generator).to("cpu")
    full = Sequences.from_prompt_and_completion(out.tokens[:, :P], out.tokens[:, P:])
    learner_probs = _next_probs(learner, full, steps)  # (n, steps, V)
    kl = _kl_rows(world.expert_probs(full)[:, -steps:].double(), learner_probs)
    rewards = world.true_rewards(full)[:, -steps:].double()
    trace = None
    if clean is not None:
        tokens = full.tokens.clone()
        tokens[:, : clean.length] = clean.tokens
        swapped = Sequences.from_prompt_and_completion(tokens[:, :P], tokens[:, P:])
        trace = _kl_rows(_next_probs(learner, swapped, steps), learner_probs).clone()
    return kl.clone(), rewards.clone(), trace


def _next_probs(learner: Policy, seqs: Sequences, steps: int) -> Tensor:
    """[n, steps, V] float64 the learner's next-token distributions at the last `steps`
    positions (those that predict the continuation's tokens)."""
    with torch.inference_mode():
        logits = learner.next_token_logits(seqs.to(learner.device)).double().cpu()
    return torch.softmax(logits[:, -steps:], dim=-1)


def _summarise(
    kl_p: np.ndarray,
    kl_u: np.ndarray,
    r_p: np.ndarray,
    r_u: np.ndarray,
    rng: np.random.Generator,
    n_boot: int,
    confidence: float,
    position: int,
    k: int,
    perturbation: str,
    trace: np.ndarray | None = None,
) -> SelfRecovery:
    """The curves, half-lives and notes from per-prefix arrays [N, D] (`trace`: zeros if
    None)."""
    N, D = kl_p.shape
    trace = np.zeros((N, D)) if trace is None else trace
    distances = np.arange(1, D + 1)
    notes: list[str] = []
    sqrt_n = math.sqrt(N)
    regret_diff = r_u - r_p  # (N, D), always finite
    excess_regret = regret_diff.mean(axis=0)
    regret_se = regret_diff.std(axis=0, ddof=1) / sqrt_n
    inf_p, inf_u = np.isinf(kl_p).any(axis=0), np.isinf(kl_u).any(axis=0)
    if (inf_p & inf_u).any():
        raise UndefinedMetric(
            f"the excess KL is inf - inf at d = {_ranges(distances[inf_p & inf_u])}: the learner "
            "gives probability 0 to a token the expert emits in both arms (smooth the learner)"
        )
    finite = ~(inf_p | inf_u)
    excess_kl = np.where(inf_p, math.inf, np.where(inf_u, -math.inf, 0.0))
    kl_se = np.full(D, math.inf)
    kl_diff = kl_p[:, finite] - kl_u[:, finite]
    excess_kl[finite] = kl_diff.mean(axis=0)
    kl_se[finite] = kl_diff.std(axis=0, ddof=1) / sqrt_n
    kl_half: HalfLife | None = None
    if not finite.all():
        notes.append(
            f"excess KL is infinite at d = {_ranges(distances[~finite])}: the learner gives "
            "probability 0 to a token the expert emits (KL(expert || learner) = +inf); the KL "
            "half-life is undefined"
        )
    elif not excess_kl[0] > 0:
        notes.append(
            f"excess KL at d = 1 is {excess_kl[0]:.3g} <= 0: nothing to recover from (the "
            "perturbation does not raise the learner's KL from the expert), no KL half-life"
        )
    else:
        kl_half = _bootstrap_half_life(kl_p - kl_u, rng, n_boot, confidence)
    regret_half: HalfLife | None = None
    if not excess_regret[0] > 0:
        notes.append(
            f"excess regret at d = 1 is {excess_regret[0]:.3g} <= 0: nothing to recover from "
            "(the perturbation costs no reward at d = 1), no regret half-life"
        )
    else:
        regret_half = _bootstrap_half_life(regret_diff, rng, n_boot, confidence)
    trace_kl, trace_se, trace_half = _trace(trace, rng, n_boot, confidence, notes)
    for name, h in (("KL", kl_half), ("regret", regret_half), ("trace", trace_half)):
        if h is None:
            continue
        if math.isinf(h.value):
            notes.append(
                f"the excess {name} never falls below half its value at d = 1 within D = {D}: "
                "half-life +inf (a longer horizon_after may resolve it)"
            )
        if h.undefined_resamples:
            notes.append(
                f"{h.undefined_resamples} of {n_boot} bootstrap resamples have excess {name} "
                "<= 0 at d = 1 and are left out of the half-life interval"
            )
    return SelfRecovery(
        excess_kl,
        kl_se,
        excess_regret,
        regret_se,
        trace_kl,
        trace_se,
        kl_p.mean(axis=0),  # in [0, +inf]: no nan
        kl_u.mean(axis=0),
        r_p.mean(axis=0),
        r_u.mean(axis=0),
        kl_half,
        regret_half,
        trace_half,
        N,
        position,
        k,
        perturbation,
        tuple(notes),
    )


def _trace(
    trace: np.ndarray, rng: np.random.Generator, n_boot: int, confidence: float, notes: list[str]
) -> tuple[np.ndarray, np.ndarray, HalfLife | None]:
    """Mean and standard error of the per-prefix trace [N, D] (+inf where any is infinite) and
    its half-life (None, with a note, when infinite or <= 0 at d = 1)."""
    N, D = trace.shape
    infinite = np.isinf(trace).any(axis=0)
    mean = np.full(D, math.inf)
    se = np.full(D, math.inf)
    mean[~infinite] = trace[:, ~infinite].mean(axis=0)
    se[~infinite] = trace[:, ~infinite].std(axis=0, ddof=1) / math.sqrt(N)
    if infinite.any():
        where = _ranges(np.arange(1, D + 1)[infinite])
        notes.append(
            f"the trace is infinite at d = {where}: after the perturbation the learner rules "
            "out a token it allows after the clean prefix; no trace half-life"
        )
        return mean, se, None
    if not mean[0] > 0:
        notes.append(
            f"the trace at d = 1 is {mean[0]:.3g} <= 0: the perturbation does not change the "
            "learner's next-token distribution, no trace half-life"
        )
        return mean, se, None
    return mean, se, _bootstrap_half_life(trace, rng, n_boot, confidence)
