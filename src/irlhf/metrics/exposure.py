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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse, stats
from torch import Tensor

from irlhf.policies.tabular import TabularPolicy
from irlhf.types import Sequences
from irlhf.worlds.automaton import AutomatonWorld


@dataclass(frozen=True)
class ExposureBias:
    """Per prefix length L = 1..horizon (index L-1). Standard errors are None when exact."""

    eps: np.ndarray
    """eps_<=L: mean per-step KL(expert || model) on expert prefixes (nats)."""
    R: np.ndarray
    """R_<=L: summed per-step KL(expert || model) along model generations (nats)."""
    acc_err: np.ndarray
    pct_ex_acc_err: np.ndarray
    regret: np.ndarray
    """J_L(expert) - J_L(model), true-return regret (reward units)."""
    regret_se: np.ndarray | None = None
    R_se: np.ndarray | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.arange(1, len(self.eps) + 1)


def _kl_rows(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) per row of two [..., V] distributions, 0 log 0 = 0."""
    log_ratio = torch.where(p > 0, p.log() - q.log(), torch.zeros_like(p))
    return (p * log_ratio).sum(dim=-1)


def occupancy(world: AutomatonWorld, policy: TabularPolicy, horizon: int) -> Tensor:
    """[horizon, S] float64: d_t(s) = P(state at step t = s) when acting with `policy`."""
    _check_policy(world, policy)
    # d_{t+1} = P^T d_t with P[s, s'] = sum_a pi(a|s) [delta(s,a) = s'], kept sparse (S*V
    # non-zeros at most): linear in the table's size. scipy's CSR product is ~10x faster here
    # than torch's scatter-add or sparse kernels on CPU.
    S, V = world.n_states, world.vocab_size
    sources = np.repeat(np.arange(S), V)
    transpose = sparse.csr_matrix(
        (policy.probs.numpy().ravel(), (world.transition.numpy().ravel(), sources)), shape=(S, S)
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
    return (policy.probs * world.reward_table).sum(dim=1)


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
    """Exact exposure-bias metrics of a tabular policy for every L = 1..horizon."""
    horizon = world.horizon if horizon is None else horizon
    kl = _kl_rows(world.expert.probs, policy.probs)  # (S,) per-state loss
    expert_d = occupancy(world, world.expert, horizon)  # (horizon, S)
    model_d = occupancy(world, policy, horizon)
    eps_steps = expert_d @ kl  # (horizon,)
    r_steps = model_d @ kl
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
    lengths = np.arange(1, len(eps_steps) + 1)
    eps = np.cumsum(eps_steps) / lengths
    R = np.cumsum(r_steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_err = R / eps
        pct = (R - lengths * eps) / (lengths * eps) * 100.0
    return ExposureBias(eps, R, acc_err, pct, np.cumsum(regret_steps), regret_se, r_se)


def exposure_bias_mc(
    world: Any,
    policy: Any,  # a CausalLMPolicy (anything with next_token_logits and sample)
    n_samples: int,
    generator: torch.Generator,
    horizon: int | None = None,
    batch_size: int = 256,
) -> ExposureBias:
    """Monte-Carlo exposure metrics of a neural policy, with standard errors of R and regret.

    Works in any world with `expert_probs`, `sample_prompts` and `true_rewards`: the automaton
    world, or a neural world (`irlhf.worlds.oracle.LMWorld`, prompts of any length), whose
    expert is the oracle. R and regret come from `n_samples` of the model's own generations;
    eps from as many expert-generated sequences, each scored with the exact expert distribution
    per prefix. The expert's return J_L(expert) is exact in the automaton world and a Monte-Carlo
    mean over the same expert samples elsewhere (its error is then not in regret_se)."""
    horizon = world.horizon if horizon is None else horizon
    exact = isinstance(world, AutomatonWorld)

    def per_step(seqs: Sequences) -> tuple[Tensor, Tensor]:
        P = seqs.prompt_length
        with torch.inference_mode():
            logits = policy.next_token_logits(seqs.to(policy.device)).double().cpu()
        model_probs = torch.softmax(logits[:, P:], dim=-1)  # (B, horizon, V)
        kl = _kl_rows(world.expert_probs(seqs)[:, P:].double(), model_probs)
        return kl, world.true_rewards(seqs)[:, P:].double()

    def expert_samples(n: int) -> Sequences:
        if exact:
            return world.rollout(world.expert, n, generator, horizon)
        prompts = world.sample_prompts(n, generator)
        return world.demonstrator().sample(prompts, horizon, generator).to("cpu")

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
        kl, rewards = per_step(expert_samples(n))
        expert_kl.append(kl)
        expert_rewards.append(rewards)
    if exact:
        expert_steps = expected_rewards(world, world.expert, horizon).numpy()
    else:
        expert_steps = torch.cat(expert_rewards).mean(dim=0).numpy()
    model_kl_t, rewards_t = torch.cat(model_kl), torch.cat(model_rewards)
    cum_kl = model_kl_t.cumsum(dim=1).numpy()  # (N, horizon): per-sample R_<=L
    cum_regret = expert_steps.cumsum() - rewards_t.cumsum(dim=1).numpy()
    sqrt_n = np.sqrt(len(cum_kl))
    return _summarise(
        torch.cat(expert_kl).mean(dim=0).numpy(),
        model_kl_t.mean(dim=0).numpy(),
        expert_steps - rewards_t.mean(dim=0).numpy(),
        regret_se=cum_regret.std(axis=0, ddof=1) / sqrt_n,
        r_se=cum_kl.std(axis=0, ddof=1) / sqrt_n,
    )


@dataclass(frozen=True)
class PowerLaw:
    """y ~ c * L^exponent fitted on log-log axes, with a confidence interval."""

    exponent: float
    ci_low: float
    ci_high: float
    prefactor: float


def fit_power_law(lengths: np.ndarray, values: np.ndarray, confidence: float = 0.95) -> PowerLaw:
    """Least-squares slope of log(mean values) on log(lengths), with a confidence interval.

    values: [n_lengths] or [n_seeds, n_lengths]. One curve: the interval from the slope's
    t-statistic. Several seeds: a jackknife t-interval over seeds (the slope of each
    leave-one-seed-out mean curve; se^2 = (n - 1) / n * sum (s_i - mean s)^2, t with n - 1
    degrees of freedom). The curves within a seed are correlated, so one curve's OLS interval
    would be too narrow, and so is a percentile bootstrap with few seeds (with 3 seeds it is
    about the range of the per-seed slopes); the jackknife keeps its coverage there."""
    lengths = np.asarray(lengths, dtype=float)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if values.shape[1] != len(lengths):
        raise ValueError(f"values must have {len(lengths)} columns, got {values.shape[1]}")
    if np.any(values.mean(axis=0) <= 0):
        raise ValueError("a power law needs positive values at every length")
    x = np.log(lengths)
    fit = stats.linregress(x, np.log(values.mean(axis=0)))
    exponent, intercept = fit.slope, fit.intercept
    n = len(values)
    if n == 1:
        t = stats.t.ppf(0.5 + confidence / 2, df=max(len(x) - 2, 1))
        lo, hi = exponent - t * fit.stderr, exponent + t * fit.stderr
    else:
        # leave-one-seed-out mean curves, refitted in one least-squares solve
        curves = (values.sum(axis=0, keepdims=True) - values) / (n - 1)  # (n, n_lengths)
        if np.any(curves <= 0):
            lo = hi = float("nan")  # some leave-one-out mean is not positive: no interval
        else:
            xc = x - x.mean()
            slopes = (np.log(curves) @ xc) / (xc @ xc)
            se = np.sqrt((n - 1) / n * np.sum((slopes - slopes.mean()) ** 2))
            t = stats.t.ppf(0.5 + confidence / 2, df=n - 1)
            lo, hi = exponent - t * se, exponent + t * se
    return PowerLaw(float(exponent), float(lo), float(hi), float(np.exp(intercept)))


def _check_policy(world: AutomatonWorld, policy: TabularPolicy) -> None:
    if tuple(policy.probs.shape) != (world.n_states, world.vocab_size):
        raise ValueError(
            f"policy table must be [{world.n_states}, {world.vocab_size}] for this world, "
            f"got {tuple(policy.probs.shape)}"
        )
