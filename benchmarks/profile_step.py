"""Where the time of one row goes, irlhf and the peer side by side (torch.profiler).

    .venv/bin/python benchmarks/profile_step.py sft [--size 0] [--steps 4] [--threads 2]

Profiles `--steps` optimiser steps (or one sampler call) of each side after a warm-up and prints
the share of self CPU time by kind of work (matrix multiplies, attention, activation, softmax
and losses, optimiser, other) and the top operators. Operators are torch's; Python overhead
shows as time outside them ("not in any operator": wall time minus the operators' self time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import reexec_with_settings  # noqa: E402

reexec_with_settings()

# ruff: noqa: E402
import irlhf_side
import torch
from cases import ROWS, SIZES, build, quiet
from common import Workload, timing_malloc
from torch.profiler import ProfilerActivity, profile

KINDS = [
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear")),
    ("attention", ("scaled_dot_product", "flash_attention", "aten::_softmax", "softmax_backward")),
    # irlhf's GELU is sigmoid-based (lean_gpt2._GeluTanh: addcmul, sigmoid, and elementwise
    # products that land in "elementwise"); with fused AdamW on both sides no optimiser uses
    # addcmul
    ("activation (GELU)", ("gelu", "aten::tanh", "aten::pow", "tanh_backward", "sigmoid")),
    ("log-softmax / losses", ("log_softmax", "logsumexp", "nll_loss", "cross_entropy", "kl_div")),
    ("optimiser", ("adam", "lerp", "addcdiv", "_foreach")),
    ("activation (GELU)", ("addcmul",)),
    ("sampling", ("multinomial", "exponential", "searchsorted", "cumsum", "aten::rand")),
    ("copies", ("aten::copy_", "aten::cat", "aten::index", "aten::clone", "aten::contiguous")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::where")),
]


def kind(name: str) -> str:
    for label, keys in KINDS:
        if any(key in name for key in keys):
            return label
    return "other operators"


def report(title: str, run, units: int, per: str) -> None:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_op = sum(e.self_cpu_time_total for e in events) / 1e6  # seconds
    shares: dict[str, float] = {}
    for e in events:
        shares[kind(e.key)] = shares.get(kind(e.key), 0.0) + e.self_cpu_time_total / 1e6
    print(f"\n{title}: {wall / units:.3f} s per {per} (profiled; profiling adds overhead)")
    outside = max(0.0, wall - total_op)
    for label, sec in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<24} {sec / units:7.3f} s  {100 * sec / wall:5.1f}%")
    print(f"  {'not in any operator':<24} {outside / units:7.3f} s  {100 * outside / wall:5.1f}%")
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
    print(
        "  top operators: "
        + ", ".join(f"{e.key} {e.self_cpu_time_total / 1e3 / units:.1f} ms" for e in top)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row", choices=ROWS)
    parser.add_argument("--size", type=int, default=0, help="index into cases.SIZES")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    quiet()
    timing_malloc()  # glibc's malloc thresholds as run.py fixes them (no page faults per step)
    torch.set_num_threads(args.threads)
    size, work = SIZES[args.size], Workload()
    mine, peer = build(args.row, size, work, irlhf_side.teacher_for(size))
    torch.set_num_threads(args.threads)
    print(f"{args.row} at {size}, {args.threads} threads")
    for title, run in (("irlhf", mine), ("peer", peer)):
        if args.row == "sampler":
            run()
            report(title, run, 1, "sampler call")
        else:
            run(2)
            # (steps + 1) optimiser steps: the first of a block pays the block's set-up
            report(title, lambda r=run: r(args.steps + 1), args.steps + 1, "optimiser step")


if __name__ == "__main__":
    main()
