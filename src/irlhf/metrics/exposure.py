"""Exposure bias: how a learner's errors compound along its own generations.

Following Arora et al. 2022 ("Why exposure bias matters"), with the per-step loss
l(prefix) = KL(expert(. | prefix) || model(. | prefix)):

    eps_<=L  = (1/L) sum_{t<L} E_{prefix ~ expert}[l]   (error on the expert's own prefixes)
    R_<=L    = sum_{t<L} E_{prefix ~ model}[l]          (summed along the model's generations)
    AccErr_<=L    = R_<=L / eps_<=L                       (between L and L^2)
    %ExAccErr_<=L = (R_<=L - L eps_<=L) / (L eps_<=L) * 100

plus the true-return regret J_L(expert) - J_L(model) for every L <= horizon and the power-law
exponent of regret against L (Ross & Bagnell 2010: ~2 for behaviour cloning when mistakes lead
where the expert never went, ~1 for DAgger).

Tabular policies in the automaton world get exact values by dynamic programming over the latent
states (float64). Neural policies get Monte-Carlo estimates with the exact expert distribution at
each sampled prefix, with standard errors, in any world with an exact expert: the automaton, the
neural oracle world or the real-text world with its teacher as the oracle (as Arora et al. 2022
did with GPT-2).

No metric here returns nan. KL(expert || model) is +inf at a prefix where the model gives
probability 0 to a token the expert emits (a greedy or top-k student, or a float32 table whose
smallest probabilities underflow): eps and R are then +inf from the first L whose prefixes reach
such a state (a state never reached adds 0, not 0 * inf), with a note in `ExposureBias.notes`.
AccErr and %ExAccErr are defined only where 0 < eps_<=L < inf (0/0 and x/inf say nothing about
compounding); reading them elsewhere raises `UndefinedMetric`, and `ExposureBias.defined` gives
the values where they are defined. Tables of any float dtype are read in float64, rows
renormalised (`float64_table`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from scipy import sparse, stats
from torch import Tensor

from irlhf.metrics.advantage import expert_values, pdl_regret
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy, World
from irlhf.types import Sequences
from irlhf.worlds.automaton import AutomatonWorld

RATIOS = ("acc_err", "pct_ex_acc_err")
"""The metrics defined only where 0 < eps_<=L < inf."""


@dataclass(frozen=True)
class ExposureBias:
    """Per prefix length L = 1..horizon (index L-1). Standard errors are None when exact.

    No array holds nan. eps, R and R_se may be +inf (see `notes`); AccErr and %ExAccErr exist
    only where 0 < eps_<=L < inf (`ratio_defined`): `acc_err` / `pct_ex_acc_err` raise
    `UndefinedMetric` when some L is undefined, `defined(name)` gives (lengths, values) where
    defined."""

    eps: np.ndarray
    """eps_<=L: mean per-step KL(expert || model) on expert prefixes (nats; may be +inf)."""
    R: np.ndarray
    """R_<=L: summed per-step KL(expert || model) along model generations (nats; may be +inf)."""
    regret: np.ndarray
    """J_L(expert) - J_L(model), true-return regret (reward units)."""
    ratio_defined: np.ndarray
    """bool: where AccErr_<=L and %ExAccErr_<=L are defined (0 < eps_<=L < inf)."""
    acc_err_where_defined: np.ndarray
    """AccErr_<=L = R_<=L / eps_<=L at the lengths where defined (+inf where R is)."""
    pct_ex_acc_err_where_defined: np.ndarray
    """%ExAccErr_<=L = (R_<=L - L eps_<=L) / (L eps_<=L) * 100 where defined (+inf where R is)."""
    regret_se: np.ndarray | None = None
    R_se: np.ndarray | None = None
    """Monte Carlo: the standard error of R_<=L (+inf where R_<=L is +inf)."""
    notes: tuple[str, ...] = ()
    """What is infinite or undefined, where, and why (empty when every value is finite)."""

    @property
    def lengths(self) -> np.ndarray:
        return np.arange(1, len(self.eps) + 1)

    @property
    def acc_err(self) -> np.ndarray:
        """AccErr_<=L at every L; raises `UndefinedMetric` if it is undefined at some L."""
        return self._ratio("acc_err")

    @property
    def pct_ex_acc_err(self) -> np.ndarray:
        """%ExAccErr_<=L at every L; raises `UndefinedMetric` if it is undefined at some L."""
        return self._ratio("pct_ex_acc_err")

    def _ratio(self, name: str) -> np.ndarray:
        if not self.ratio_defined.all():
            where = _ranges(self.lengths[~self.ratio_defined])
            raise UndefinedMetric(
                f"{name} is undefined at L = {where} (eps_<=L is 0 or +inf there; "
                f"{'; '.join(self.notes)}). Read the defined values with .defined({name!r})"
            )
        return getattr(self, f"{name}_where_defined")

    def defined(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(lengths, values) of one metric (eps, R, regret, acc_err, pct_ex_acc_err, regret_se,
        R_se) at the lengths where it is defined (+inf included: an infinite KL is a value)."""
        if name in RATIOS:
            return self.lengths[self.ratio_defined], getattr(self, f"{name}_where_defined")
        if name not in ("eps", "R", "regret", "regret_se", "R_se"):
            raise ValueError(f"unknown exposure metric {name!r}")
        values = getattr(self, name)
        if values is None:
            raise UndefinedMetric(f"{name} is None: exact metrics have no standard errors")
        return self.lengths, values


def _ranges(lengths: np.ndarray) -> str:
    """Sorted integers as runs: "1..3, 7, 9..12"."""
    runs: list[list[int]] = []
    for x in (int(v) for v in lengths):
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs)


def float64_table(policy: TabularPolicy) -> Tensor:
    """The policy's table in float64. A table of another dtype (float32, ...) is converted and
    its rows renormalised: a float32 row sums to 1 only within ~1e-7, and that leak would
    compound over the horizon (and make KL slightly negative). Exact zeros stay zeros."""
    probs = policy.probs
    if probs.dtype == torch.float64:
        return probs
    probs = probs.double()
    return probs / probs.sum(dim=1, keepdim=True)


def _kl_rows(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) per row of two [..., V] distributions, in float64: 0 log(0 / q) = 0 (q = 0
    too), +inf where p > 0 = q, clamped at 0 (round-off). Raises ValueError on nan input."""
    p, q = p.double(), q.double()
    support = p > 0
    log_ratio = torch.where(support, p.log() - q.log(), torch.zeros_like(p))  # p > 0 = q: +inf
    kl = torch.where(support, p * log_ratio, torch.zeros_like(p)).sum(dim=-1).clamp_min(0.0)
    if bool(kl.isnan().any()):
        raise ValueError("KL(expert || model) is nan: a next-token distribution holds nan")
    return kl


def _expectation(d: Tensor, loss: Tensor) -> Tensor:
    """[T] sum_s d[t, s] loss[s] for a loss in [0, +inf]: +inf where a state of infinite loss
    has positive occupancy, and a state never visited adds 0 (not 0 * inf = nan)."""
    infinite = loss.isinf()
    finite = d @ torch.where(infinite, torch.zeros_like(loss), loss)
    reached = (d[:, infinite] > 0).any(dim=1)
    return torch.where(reached, torch.full_like(finite, math.inf), finite)


def occupancy(world: AutomatonWorld, policy: TabularPolicy, horizon: int) -> Tensor:
    """[horizon, S] float64: d_t(s) = P(state at step t = s) when acting with `policy` (its
    table read in float64, `float64_table`)."""
    _check_policy(world, policy)
    # d_{t+1} = P^T d_t with P[s, s'] = sum_a pi(a|s) [delta(s,a) = s'], kept sparse (S*V
    # non-zeros at most): linear in the table's size. scipy's CSR product is ~10x faster here
    # than torch's scatter-add or sparse kernels on CPU.
    S, V = world.n_states, world.vocab_size
    sources = np.repeat(np.arange(S), V)
    transpose = sparse.csr_matrix(
        (float64_table(policy).numpy().ravel(), (world.transition.numpy().ravel(), sources)),
        shape=(S, S),
    )
    d = np.empty((horizon, S))
    d[0] = world.start.numpy()
    for t in range(1, horizon):
        d[t] = transpose @ d[t - 1]
    return torch.from_numpy(d)


def expected_rewards(world: AutomatonWorld, policy: TabularPolicy, horizon: int) -> Tensor:
    """[horizon] float64: E[r_t] at each step under `policy`."""
    return occupancy(world, policy, horizon) @ _step_reward(world, policy)


def _step_reward(world: AutomatonWorld, policy: TabularPolicy) -> Tensor:
    """[S] expected immediate reward in each state under the policy."""
    return (float64_table(policy) * world.reward_table).sum(dim=1)


def exact_return(world: AutomatonWorld, policy: TabularPolicy, horizon: int | None = None) -> float:
    """J_T(policy): expected undiscounted return over `horizon` steps, exactly."""
    horizon = world.horizon if horizon is None else horizon
    return float(expected_rewards(world, policy, horizon).sum())


def optimal_return(world: AutomatonWorld, horizon: int | None = None) -> float:
    """max over all (time-dependent) policies of J_T: the best achievable true return, by
    backward induction V_t(s) = max_a r(s, a) + V_{t+1}(delta(s, a)), V_T = 0."""
    horizon = world.horizon if horizon is None else horizon
    value = torch.zeros(world.n_states, dtype=torch.float64)
    for _ in range(horizon):
        value = (world.reward_table + value[world.transition]).max(dim=1).values
    return float(world.start @ value)


def exposure_bias(
    world: AutomatonWorld, policy: TabularPolicy, horizon: int | None = None
) -> ExposureBias:
    """Exact exposure-bias metrics of a tabular policy for every L = 1..horizon (+inf where the
    policy gives probability 0 to a token the expert emits at a reached state; see
    `ExposureBias.notes`)."""
    horizon = world.horizon if horizon is None else horizon
    _check_policy(world, policy)
    kl = _kl_rows(float64_table(world.expert), float64_table(policy))  # (S,) in [0, +inf]
    expert_d = occupancy(world, world.expert, horizon)  # (horizon, S)
    model_d = occupancy(world, policy, horizon)
    eps_steps = _expectation(expert_d, kl)  # (horizon,)
    r_steps = _expectation(model_d, kl)
    regret_steps = expert_d @ _step_reward(world, world.expert) - model_d @ _step_reward(
        world, policy
    )
    return _summarise(eps_steps.numpy(), r_steps.numpy(), regret_steps.numpy())


def _summarise(
    eps_steps: np.ndarray,
    r_steps: np.ndarray,
    regret_steps: np.ndarray,
    regret_se: np.ndarray | None = None,
    r_se: np.ndarray | None = None,
) -> ExposureBias:
    """Cumulate per-step losses (each in [0, +inf]) into the metrics, ratios where defined."""
    named: dict[str, np.ndarray | None] = {"eps": eps_steps, "R": r_steps, "regret": regret_steps}
    named |= {"regret_se": regret_se, "R_se": r_se}
    for name, values in named.items():
        if values is not None and np.isnan(values).any():
            raise ValueError(f"exposure metrics: the per-step {name} holds nan")
    lengths = np.arange(1, len(eps_steps) + 1)
    eps = np.cumsum(eps_steps) / lengths
    R = np.cumsum(r_steps)
    defined = (eps > 0) & np.isfinite(eps)
    L_eps = lengths[defined] * eps[defined]
    acc_err = R[defined] / eps[defined]  # +inf where R is
    pct = (R[defined] - L_eps) / L_eps * 100.0
    return ExposureBias(
        eps,
        R,
        np.cumsum(regret_steps),
        defined,
        acc_err,
        pct,
        regret_se,
        r_se,
        _notes(lengths, eps, R, r_se),
    )


def _notes(
    lengths: np.ndarray, eps: np.ndarray, R: np.ndarray, r_se: np.ndarray | None
) -> tuple[str, ...]:
    notes = []
    if np.isinf(eps).any():
        notes.append(
            f"eps_<=L is +inf at L = {_ranges(lengths[np.isinf(eps)])}: on the expert's own "
            "prefixes the model gives probability 0 to a token the expert emits "
            "(KL(expert || model) = +inf)"
        )
    if np.isinf(R).any():
        notes.append(
            f"R_<=L is +inf at L = {_ranges(lengths[np.isinf(R)])}: along its own generations "
            "the model reaches prefixes where it gives probability 0 to a token the expert "
            "emits (KL(expert || model) = +inf)"
        )
        inf_ratio = np.isinf(R) & np.isfinite(eps) & (eps > 0)
        if inf_ratio.any():
            notes.append(
                f"AccErr_<=L and %ExAccErr_<=L are +inf at L = {_ranges(lengths[inf_ratio])} "
                "(R_<=L = +inf, eps_<=L finite)"
            )
    if r_se is not None and np.isinf(r_se).any():
        notes.append(f"R_se is +inf at L = {_ranges(lengths[np.isinf(r_se)])}, where R_<=L is")
    for where, why in (
        (
            eps == 0,
            "eps_<=L = 0: the model matches the expert (to round-off) on the expert's prefixes; "
            "R_<=L / 0",
        ),
        (np.isinf(eps), "eps_<=L = +inf: R_<=L / inf says nothing about compounding"),
    ):
        if where.any():
            notes.append(
                f"AccErr_<=L and %ExAccErr_<=L are undefined at L = {_ranges(lengths[where])} "
                f"({why})"
            )
    return tuple(notes)


def exposure_bias_mc(
    world: World,
    policy: Policy,
    n_samples: int,
    generator: torch.Generator,
    horizon: int | None = None,
    batch_size: int = 256,
    observe: Callable[[Sequences, Tensor], None] | None = None,
) -> ExposureBias:
    """Monte-Carlo exposure metrics of a neural policy, with standard errors of R and regret.

    Works in any world with `expert_probs`, `sample_prompts` and `true_rewards`: the automaton
    world, or a neural world (`irlhf.worlds.oracle.LMWorld`, prompts of any length), whose
    expert is the oracle. R and regret come from `n_samples` of the model's own generations;
    eps from as many expert-generated sequences, each scored with the exact expert distribution
    per prefix. In the automaton world the regret is the performance-difference estimate
    (`irlhf.metrics.advantage.pdl_regret`: the expert's exact values, the model's exact
    next-token distribution at each of its sampled prefixes; unbiased, with less variance than
    sampled rewards); elsewhere J_L(expert) is a Monte-Carlo mean over the expert samples (its
    error is then not in regret_se) and J_L(model) one over the model's.

    A model that gives probability 0 to a token the expert emits at a sampled prefix (e.g. a
    top-k sampler) has +inf KL there: eps / R (and R_se) are +inf from that L, with notes, as in
    `exposure_bias`. n_samples must be at least 2 (for the standard errors).

    `observe(seqs, probs)`, if given, is called with each batch of the model's own samples (on
    the CPU) and its next-token distribution at their completion positions ([B, horizon, V],
    float64): other statistics of the same roll-outs (e.g. trap rates) then cost no second
    sampling pass."""
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 for the standard errors (got {n_samples})")
    horizon = world.horizon if horizon is None else horizon

    automaton = isinstance(world, AutomatonWorld)
    values = expert_values(world, horizon) if isinstance(world, AutomatonWorld) else None

    def per_step(seqs: Sequences, own: bool = True) -> tuple[Tensor, Tensor]:
        """Per-step KL and the per-step term of the regret: the sampled reward, or (automaton,
        the model's own samples) the performance-difference sum per L, differenced back to
        per-step terms (`irlhf.metrics.advantage`)."""
        P = seqs.prompt_length
        with torch.inference_mode():
            logits = policy.next_token_logits(seqs.to(policy.device)).double().cpu()
        model_probs = torch.softmax(logits[:, P:], dim=-1)  # (B, horizon, V)
        if own and observe is not None:
            observe(seqs, model_probs)
        kl = _kl_rows(world.expert_probs(seqs)[:, P:].double(), model_probs)
        if values is None or not own:
            return kl, world.true_rewards(seqs)[:, P:].double()
        regret = pdl_regret(cast(AutomatonWorld, world), seqs, model_probs, values)
        return kl, -torch.diff(regret, dim=1, prepend=torch.zeros_like(regret[:, :1]))

    def expert_samples(n: int) -> Sequences:
        if isinstance(world, AutomatonWorld):
            return world.rollout(world.expert, n, generator, horizon)
        prompts = world.sample_prompts(n, generator)
        demonstrator = cast(Policy, world.demonstrator())  # a neural world's: an LM
        return demonstrator.sample(prompts, horizon, generator).to("cpu")

    model_kl, model_rewards, expert_kl, expert_rewards = [], [], [], []
    for start in range(0, n_samples, batch_size):
        n = min(batch_size, n_samples - start)
        with torch.inference_mode():
            own = policy.sample(
                world.sample_prompts(n, generator).to(policy.device), horizon, generator=generator
            ).to("cpu")
        kl, rewards = per_step(own)
        model_kl.append(kl)
        model_rewards.append(rewards)
        kl, rewards = per_step(expert_samples(n), own=False)
        expert_kl.append(kl)
        expert_rewards.append(rewards)
    if automaton:  # the per-step terms are minus regret increments: the expert's steps are 0
        expert_steps = np.zeros(horizon)
    else:
        expert_steps = torch.cat(expert_rewards).mean(dim=0).numpy()
    model_kl_t, rewards_t = torch.cat(model_kl), torch.cat(model_rewards)
    cum_kl = model_kl_t.cumsum(dim=1).numpy()  # (N, horizon): per-sample R_<=L, may be +inf
    cum_regret = expert_steps.cumsum() - rewards_t.cumsum(dim=1).numpy()
    sqrt_n = np.sqrt(len(cum_kl))
    finite = np.isfinite(cum_kl).all(axis=0)  # the se of an infinite mean: +inf, not inf - inf
    r_se = np.full(horizon, math.inf)
    r_se[finite] = cum_kl[:, finite].std(axis=0, ddof=1) / sqrt_n
    return _summarise(
        torch.cat(expert_kl).mean(dim=0).numpy(),
        model_kl_t.mean(dim=0).numpy(),
        expert_steps - rewards_t.mean(dim=0).numpy(),
        regret_se=cum_regret.std(axis=0, ddof=1) / sqrt_n,
        r_se=r_se,
    )


@dataclass(frozen=True)
class PowerLaw:
    """y ~ c * L^exponent fitted on log-log axes, with a confidence interval.

    Without an interval (see `note`) ci_low = -inf and ci_high = +inf: never nan."""

    exponent: float
    ci_low: float
    ci_high: float
    prefactor: float
    note: str | None = None
    """Why there is no interval (None when there is one)."""


NO_RESIDUAL = "one curve at two lengths: the line fits them exactly, no interval (ci = +-inf)"
NO_JACKKNIFE = (
    "some leave-one-seed-out mean curve is <= 0 at a fitted length: no jackknife interval "
    "(ci = +-inf)"
)


def fit_power_law(lengths: np.ndarray, values: np.ndarray, confidence: float = 0.95) -> PowerLaw:
    """Least-squares slope of log(mean values) on log(lengths), with a confidence interval.

    values: [n_lengths] or [n_seeds, n_lengths]. One curve: the interval from the slope's
    t-statistic. Several seeds: a jackknife t-interval over seeds (the slope of each
    leave-one-seed-out mean curve; se^2 = (n - 1) / n * sum (s_i - mean s)^2, t with n - 1
    degrees of freedom). The curves within a seed are correlated, so one curve's OLS interval
    would be too narrow, and so is a percentile bootstrap with few seeds (with 3 seeds it is
    about the range of the per-seed slopes); the jackknife keeps its coverage there.

    Raises ValueError for non-finite values or lengths, lengths <= 0, fewer than two distinct
    lengths, or a mean <= 0 at some length. When the fit stands but has no interval (one curve
    at two lengths, or a leave-one-seed-out mean <= 0 somewhere) the interval is (-inf, +inf)
    with a `note`."""
    lengths = np.asarray(lengths, dtype=float)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if values.shape[1] != len(lengths):
        raise ValueError(f"values must have {len(lengths)} columns, got {values.shape[1]}")
    if not (np.isfinite(values).all() and np.isfinite(lengths).all()):
        raise ValueError("a power law needs finite values and lengths (got inf or nan)")
    if np.any(lengths <= 0):
        raise ValueError("a power law needs positive lengths")
    if len(np.unique(lengths)) < 2:
        raise ValueError("a power law needs at least two distinct lengths")
    if np.any(values.mean(axis=0) <= 0):
        raise ValueError("a power law needs positive values at every length")
    x = np.log(lengths)
    fit = stats.linregress(x, np.log(values.mean(axis=0)))
    exponent, intercept = fit.slope, fit.intercept
    n, note = len(values), None
    if n == 1 and len(x) <= 2:
        lo, hi, note = -math.inf, math.inf, NO_RESIDUAL
    elif n == 1:
        t = stats.t.ppf(0.5 + confidence / 2, df=len(x) - 2)
        lo, hi = exponent - t * fit.stderr, exponent + t * fit.stderr
    else:
        # leave-one-seed-out mean curves, refitted in one least-squares solve
        curves = (values.sum(axis=0, keepdims=True) - values) / (n - 1)  # (n, n_lengths)
        if np.any(curves <= 0):
            lo, hi, note = -math.inf, math.inf, NO_JACKKNIFE
        else:
            xc = x - x.mean()
            slopes = (np.log(curves) @ xc) / (xc @ xc)
            se = np.sqrt((n - 1) / n * np.sum((slopes - slopes.mean()) ** 2))
            t = stats.t.ppf(0.5 + confidence / 2, df=n - 1)
            lo, hi = exponent - t * se, exponent + t * se
    return PowerLaw(float(exponent), float(lo), float(hi), float(np.exp(intercept)), note)


def _check_policy(world: AutomatonWorld, policy: TabularPolicy) -> None:
    if tuple(policy.probs.shape) != (world.n_states, world.vocab_size):
        raise ValueError(
            f"policy table must be [{world.n_states}, {world.vocab_size}] for this world, "
            f"got {tuple(policy.probs.shape)}"
        )
