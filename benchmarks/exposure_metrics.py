"""Benchmark: exact exposure metrics for a 1,000-state x 64-token world at horizon 256.

Target (issue 2): under 2 s on 2 cores. The peer is the textbook dynamic programme written
directly in NumPy (per-step occupancy with `np.add.at`), measured in the same run; the printed
ratio is peer time / irlhf time. Run: `.venv/bin/python benchmarks/exposure_metrics.py`.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from irlhf.metrics.exposure import exposure_bias
from irlhf.policies import TabularPolicy
from irlhf.worlds import make_world


def numpy_exposure(transition, reward, start, expert, policy, horizon):
    """The same quantities (eps, R, regret per L) by a plain NumPy dynamic programme."""
    S, V = transition.shape
    kl = (expert * (np.log(expert) - np.log(policy))).sum(1)

    def occupancy(pi):
        d = np.zeros((horizon, S))
        d[0] = start
        for t in range(1, horizon):
            np.add.at(d[t], transition.ravel(), (d[t - 1][:, None] * pi).ravel())
        return d

    de, dm = occupancy(expert), occupancy(policy)
    lengths = np.arange(1, horizon + 1)
    eps = np.cumsum(de @ kl) / lengths
    R = np.cumsum(dm @ kl)
    regret = np.cumsum(de @ (expert * reward).sum(1) - dm @ (policy * reward).sum(1))
    return eps, R, regret


def timed(fn, repeats: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    torch.set_num_threads(2)
    world = make_world("absorbing", n_states=1000, vocab_size=64, horizon=256)
    g = torch.Generator().manual_seed(0)
    policy = TabularPolicy.from_logits(torch.randn(1000, 64, generator=g, dtype=torch.float64))
    ours, result = timed(lambda: exposure_bias(world, policy))
    args = [x.numpy() for x in (world.transition, world.reward_table, world.start)]
    peer, (eps, R, regret) = timed(
        lambda: numpy_exposure(*args, world.expert.probs.numpy(), policy.probs.numpy(), 256), 3
    )
    assert np.allclose(result.eps, eps) and np.allclose(result.R, R)
    assert np.allclose(result.regret, regret)
    print("exact exposure metrics, 1000 states x 64 tokens, horizon 256 (median of repeats)")
    print(f"  irlhf                 {ours:8.3f} s   (target < 2 s)")
    print(f"  NumPy np.add.at peer  {peer:8.3f} s")
    print(f"  ratio peer / irlhf    {peer / ours:8.1f}x   (results agree: yes)")


if __name__ == "__main__":
    main()
