"""Realizability, measured (issue 14 item 2): can a learner represent the expert in both modes?

`mode_kl` reads the per-step KL(expert || policy) of a learner on two sets of prefixes of an
`AutomatonWorld` (the flip-flop world above all):

(a) *expert prefixes*: every completion position of `n` roll-outs of the expert;
(b) *trap prefixes*: the completion positions, in `n` roll-outs of a mixture that does enter
    traps (the expert mixed with uniform noise, `world.demonstrator(1.0, epsilon)`), at which
    the current latent state is a trap state (`world.is_trap`; in the flip-flop world mode > 0).

The KL is exact at each sampled prefix (the expert's distribution at the state against the
policy's softmax). Each set's value is the mean over its positions, sum_i S_i / sum_i N_i with
S_i the KL summed over sequence i's positions in the set and N_i their number; its standard
error treats sequences as the independent units (positions within a sequence are correlated):
the delta-method SE of that ratio, sqrt(n / (n - 1) * sum_i (S_i - mean N_i)^2) / sum_i N_i,
which for the expert set (N_i = horizon) is the SE of the per-sequence means.

A learner that is small on both sets represents the expert where demonstrations go and where
they never go: what behaviour cloning lacks in a trap is then data, not capacity.

No nan is returned (`irlhf.metrics.undefined`): a set with no positions (no roll-out entered a
trap) raises `UndefinedMetric`; a KL of +inf (the policy gives probability 0 to a token the
expert may emit) makes that set's mean and SE +inf, with a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from irlhf.metrics.exposure import _kl_rows, float64_table
from irlhf.metrics.undefined import UndefinedMetric
from irlhf.policies.tabular import TabularPolicy
from irlhf.protocols import Policy
from irlhf.types import Sequences
from irlhf.worlds.automaton import AutomatonWorld


@dataclass(frozen=True)
class ModeKL:
    """Per-step KL(expert || policy) (nats) on expert prefixes and on trap-mode prefixes, with
    standard errors (sequences as units) and the number of positions and sequences behind each."""

    expert_kl: float
    expert_se: float
    trap_kl: float
    trap_se: float
    expert_positions: int
    trap_positions: int
    trap_sequences: int
    """Noisy roll-outs holding at least one trap position."""
    n: int
    horizon: int
    epsilon: float
    notes: list[str] = field(default_factory=list)

    def realizable(self, threshold: float = 0.05) -> bool:
        """Both per-step KLs at most `threshold` nats (issue 14's criterion: 0.05)."""
        return self.expert_kl <= threshold and self.trap_kl <= threshold


def mode_kl(
    world: AutomatonWorld,
    policy: Policy | TabularPolicy,
    n: int,
    generator: torch.Generator,
    *,
    horizon: int | None = None,
    epsilon: float = 0.2,
    batch_size: int = 256,
) -> ModeKL:
    """KL(expert || policy) per step on `n` expert roll-outs and on the trap positions of `n`
    roll-outs of `world.demonstrator(1.0, epsilon)`, each `horizon` tokens long (default: the
    world's). `policy` is a neural `Policy` (scored by `next_token_logits`, without gradients)
    or a `TabularPolicy` over the world's states."""
    horizon = world.horizon if horizon is None else horizon
    if n < 2 or horizon < 1 or batch_size < 1:
        raise ValueError(
            f"need n >= 2 (standard errors), horizon >= 1, batch_size >= 1; "
            f"got {n}, {horizon}, {batch_size}"
        )
    if not 0.0 < epsilon <= 1.0:
        raise ValueError(f"epsilon must be in (0, 1] so that roll-outs enter traps, got {epsilon}")
    noisy = world.demonstrator(1.0, epsilon)
    expert_sums, expert_counts, trap_sums, trap_counts = [], [], [], []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        seqs = world.rollout(world.expert, size, generator, horizon)
        kl, states = _position_kl(world, policy, seqs)
        expert_sums.append(_masked_sum(kl, seqs.completion_mask))
        expert_counts.append(seqs.completion_mask.sum(dim=1).double())
        seqs = world.rollout(noisy, size, generator, horizon)
        kl, states = _position_kl(world, policy, seqs)
        in_trap = seqs.completion_mask & world.is_trap[states]
        trap_sums.append(_masked_sum(kl, in_trap))
        trap_counts.append(in_trap.sum(dim=1).double())
    notes: list[str] = []
    e_kl, e_se = _ratio(torch.cat(expert_sums), torch.cat(expert_counts), "expert", notes)
    counts = torch.cat(trap_counts)
    if not bool((counts > 0).any()):
        raise UndefinedMetric(
            f"no trap positions in {n} roll-outs of the expert mixed with {epsilon} uniform "
            f"noise over {horizon} steps: the trap-prefix KL is undefined (raise epsilon, n or "
            f"the horizon)"
        )
    t_kl, t_se = _ratio(torch.cat(trap_sums), counts, "trap", notes)
    return ModeKL(
        expert_kl=e_kl,
        expert_se=e_se,
        trap_kl=t_kl,
        trap_se=t_se,
        expert_positions=int(torch.cat(expert_counts).sum()),
        trap_positions=int(counts.sum()),
        trap_sequences=int((counts > 0).sum()),
        n=n,
        horizon=horizon,
        epsilon=epsilon,
        notes=notes,
    )


def _position_kl(
    world: AutomatonWorld, policy: Policy | TabularPolicy, seqs: Sequences
) -> tuple[Tensor, Tensor]:
    """[B, T] KL(expert || policy) at every position (meaningful at completion positions) and
    [B, T] the latent states."""
    states = world.states(seqs)
    expert = float64_table(world.expert)[states]  # (B, T, V)
    if isinstance(policy, TabularPolicy):
        learner = float64_table(policy)[states]
    else:
        with torch.inference_mode():
            logits = policy.next_token_logits(seqs.to(policy.device))
        learner = torch.softmax(logits.double().cpu(), dim=-1)
    return _kl_rows(expert, learner).clone(), states


def _masked_sum(kl: Tensor, mask: Tensor) -> Tensor:
    """[B] sum of kl over the masked positions (an unmasked +inf adds nothing)."""
    return torch.where(mask, kl, torch.zeros_like(kl)).sum(dim=1)


def _ratio(sums: Tensor, counts: Tensor, name: str, notes: list[str]) -> tuple[float, float]:
    """The ratio estimator sum S / sum N and its delta-method SE over sequences (module
    docstring); +inf and +inf with a note when some S_i is infinite."""
    if bool(sums.isinf().any()):
        rows = int(sums.isinf().sum())
        notes.append(f"{name}: KL is +inf at some position of {rows} sequence(s)")
        return math.inf, math.inf
    n, total = len(sums), float(counts.sum())
    mean = float(sums.sum()) / total
    residual = sums - mean * counts
    se = math.sqrt(n / (n - 1) * float((residual**2).sum())) / total
    return mean, se


__all__ = ["ModeKL", "mode_kl"]
