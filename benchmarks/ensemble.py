"""Seeds in parallel (issue 16): M members trained and sampled as one `EnsemblePolicy` against M
single runs one after another, in one process.

    .venv/bin/python benchmarks/ensemble.py [--members 8] [--repeats 5] [--threads 2]

The student is a 2-layer, 64-wide GPT-2 (4 heads, vocabulary 512), with the workload of run.py
(common.Workload: SFT batches of 32 sequences with 8-token prompts and 32-token completions from
a data set of 256 per member; the sampler draws 64 new tokens for 64 prompts per member). Each
member has its own seed, its own data and its own generator, on both sides. Rows:

* ensemble_sft: SFT steps per second, one step = every member stepped once (`fit_neural`);
* ensemble_sampler: sampled tokens per second over all members (`sample`).

For each, the speed-up of the ensemble of M over M sequential runs, and at M = 1 the ensemble's
overhead over the single run (overhead_m1 = single rate / ensemble rate - 1). Sides alternate
within each repeat (the order flips every repeat); the table gives medians over repeats.

Measured (README-worthy): the gain depends on the threading regime more than on the model. With
run.py's settings (2 threads, OMP_WAIT_POLICY=PASSIVE) on an otherwise idle machine, every
parallel region wakes a sleeping thread, and the ensemble pays that once for all members; with
1 thread, or spinning threads (OMP_WAIT_POLICY=ACTIVE), single runs are 1.3-3x faster and the
ensemble's SFT step gains nothing (its larger tensors fall out of cache), its sampler ~1.3-1.7x.
The rows replace earlier `ensemble_*` rows of benchmarks/results.json (run.py keeps them).
Thread and allocator settings as run.py (bench_env.py, common.timing_malloc).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_env import reexec_with_settings  # noqa: E402

reexec_with_settings()

# ruff: noqa: E402  (imports after the re-exec above, on purpose)
import argparse
import json
import os
import time
from collections.abc import Callable

import torch
from common import PROMPT, Series, Size, Workload, load_average, random_tokens, sequences

from irlhf.algorithms.optim import adamw
from irlhf.algorithms.sft import SFTConfig, fit_neural
from irlhf.policies.ensemble import EnsemblePolicy, member_major
from irlhf.types import ExpertLabels

SIZE = Size("2 x 64", n_layer=2, n_embd=64, completion=32, sample_tokens=64)
WORK = Workload()
TARGET_SPEEDUP, TARGET_OVERHEAD = 4.0, 0.05
SFT_STEPS = 5  # per timed block

Block = Callable[[], float]
"""Runs one timed block and returns the work done (ensemble steps or tokens)."""


def member_labels(m: int) -> ExpertLabels:
    seqs = sequences(WORK.dataset, SIZE.completion, seed=100 + m)
    return ExpertLabels(seqs, seqs.completion_mask, actions=seqs.tokens)


def sft(members: int, ensemble: bool) -> Block:
    """SFT_STEPS steps of every member: one ensemble, or the single runs one after another."""
    config = SFTConfig(steps=SFT_STEPS, batch_size=WORK.batch, lr=WORK.lr)
    policies = [SIZE.policy(seed=m) for m in range(members)]
    labels = [member_labels(m) for m in range(members)]
    generators = [torch.Generator().manual_seed(m) for m in range(members)]
    if ensemble:
        whole = EnsemblePolicy.of(policies)
        optimizer = adamw(list(whole.parameters()), config.lr, config.weight_decay)
        merged = [member_major(labels)]

        def run_ensemble() -> float:
            fit_neural(whole, merged, config, generators, optimizer)
            return SFT_STEPS

        return run_ensemble
    optimizers = [adamw(list(p.parameters()), config.lr, config.weight_decay) for p in policies]

    def run() -> float:
        for p, lab, g, opt in zip(policies, labels, generators, optimizers, strict=True):
            fit_neural(p, [lab], config, g, opt)
        return SFT_STEPS

    return run


def sampler(members: int, ensemble: bool) -> Block:
    """One batch of SIZE.sample_tokens new tokens for WORK.sampler_batch prompts per member."""
    policies = [SIZE.policy(seed=m).eval() for m in range(members)]
    prompts = [random_tokens(WORK.sampler_batch, PROMPT, seed=200 + m) for m in range(members)]
    generators = [torch.Generator().manual_seed(m) for m in range(members)]
    if ensemble:
        whole = EnsemblePolicy.of(policies).eval()
        merged = torch.cat(prompts)

        def run_ensemble() -> float:
            return float(whole.sample(merged, SIZE.sample_tokens, generators).completion_mask.sum())

        return run_ensemble

    def run() -> float:
        total = 0.0
        for p, x, g in zip(policies, prompts, generators, strict=True):
            total += float(p.sample(x, SIZE.sample_tokens, g).completion_mask.sum())
        return total

    return run


def rates(blocks: dict[str, Block], repeats: int, threads: int) -> dict[str, Series]:
    """Work per second of each block, alternating the sides' order every repeat."""
    for block in blocks.values():  # warm-up: kernels, caches, optimiser state
        block()
    series = {name: Series() for name in blocks}
    for r in range(repeats):
        names = list(blocks) if r % 2 == 0 else list(blocks)[::-1]
        for name in names:
            assert torch.get_num_threads() == threads
            start = time.perf_counter()
            work = blocks[name]()
            series[name].values.append(work / (time.perf_counter() - start))
    return series


def measure(row: str, make: Callable[[int, bool], Block], members: int, args) -> dict:
    load_start = load_average()
    many = rates(
        {"ensemble": make(members, True), "sequential": make(members, False)},
        args.repeats,
        args.threads,
    )
    one = rates({"ensemble": make(1, True), "single": make(1, False)}, args.repeats, args.threads)
    load_end = load_average()
    speedup = many["ensemble"].median / many["sequential"].median
    overhead = one["single"].median / one["ensemble"].median - 1.0
    unit = "steps/s" if row == "ensemble_sft" else "tokens/s"
    label = {"ensemble_sft": "SFT steps", "ensemble_sampler": "sampler"}[row]
    return {
        "size": SIZE.name,
        "row": row,
        "label": f"{label}, {members} seeds as one ensemble",
        "peer": f"{members} single runs one after another",
        "unit": unit,
        "irlhf": many["ensemble"].summary(),
        "peer_result": many["sequential"].summary(),
        "ratio_irlhf_over_peer": speedup,
        "speedup": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "members": members,
        "m1": {"ensemble": one["ensemble"].summary(), "single": one["single"].summary()},
        "overhead_m1": overhead,
        "target_overhead_m1": TARGET_OVERHEAD,
        "load_average": {"start": load_start, "end": load_end},
        "steps_per_block": SFT_STEPS if row == "ensemble_sft" else None,
        "repeats": args.repeats,
        "threads": args.threads,
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")},
        "workload": {"size": SIZE.__dict__, **WORK.__dict__},
    }


def write(rows: list[dict], out: Path) -> None:
    """Replace the `ensemble_*` rows of a results.json (created if missing)."""
    results = json.loads(out.read_text()) if out.exists() else {"meta": {}, "rows": []}
    kept = [r for r in results["rows"] if not r["row"].startswith("ensemble_")]
    results["rows"] = kept + rows
    out.write_text(json.dumps(results, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="ensemble_sft,ensemble_sampler")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.members} seeds as one ensemble vs one after another; student {SIZE.name}, "
        f"{args.threads} threads; load {load_average()[0]:.2f}"
    )
    print(
        f"{'row':<18} {'unit':<9} {'ensemble':>10} {'sequential':>11} {'speed-up':>9} "
        f"{'M=1 ens':>9} {'single':>9} {'overhead':>9}  load"
    )
    makers = {"ensemble_sft": sft, "ensemble_sampler": sampler}
    rows = []
    for row in args.rows.split(","):
        res = measure(row, makers[row], args.members, args)
        rows.append(res)
        m1 = res["m1"]
        print(
            f"{row:<18} {res['unit']:<9} {res['irlhf']['median']:>10,.1f} "
            f"{res['peer_result']['median']:>11,.1f} {res['speedup']:>8.2f}x "
            f"{m1['ensemble']['median']:>9,.1f} {m1['single']['median']:>9,.1f} "
            f"{res['overhead_m1']:>+8.1%}  {res['load_average']['start'][0]:.2f}",
            flush=True,
        )
    if not args.no_write:
        write(rows, Path(args.out))
        print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
