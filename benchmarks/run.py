"""irlhf against TRL 1.16 and Hugging Face `generate`, side by side in one process.

    make bench                     # installs the `bench` extra (TRL), then runs this
    .venv/bin/python benchmarks/run.py [--repeats 5] [--threads 2] [--quick]

Rows: seconds per optimiser step of SFT, a Bradley-Terry reward model, DPO, RLOO and on-policy
distillation (GKD), and the sampler's throughput, at three settings: the small model (2 layers,
width 128, vocab 512) with 32-token completions; the same model with 64-token completions; a
4-layer, 256-wide model with 32-token completions. Every measurement alternates irlhf and the
peer within each repeat (the order flips every repeat), so both see the same machine load; the
table gives the median over repeats, the min-max, the ratio irlhf / peer of the measured
quantity, the speed-up of irlhf, and the peak RSS above each block's starting RSS. The load
average is printed with every row, and everything goes to `benchmarks/results.json`.

Thread settings, for both sides alike: `torch.set_num_threads(2)` (or `--threads`) and
OMP_WAIT_POLICY=PASSIVE (bench_env.py: the script re-executes itself once to set it before torch
loads). glibc's malloc thresholds are fixed (common.py). Cases and sizes: cases.py; timing and
memory: common.py; where the time goes: profile_step.py.
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
import platform
import subprocess
import time

import irlhf_side
import torch
from cases import LABELS, PEERS, ROWS, SIZES, SLOW_ROWS, TARGETS, build, quiet
from common import Series, StepClock, Workload, load_average, measure_peak, timing_malloc


def measure_row(row, size, work, teacher, repeats, steps, clock, threads) -> dict:
    mine, peer = build(row, size, work, teacher)
    torch.set_num_threads(threads)  # a trainer's set-up must not have changed it
    sides = {"irlhf": Series(), "peer": Series()}
    throughput = row == "sampler"

    def once(run) -> float:
        if throughput:
            start = time.perf_counter()
            return run() / (time.perf_counter() - start)
        return clock.block(lambda: run(steps))[0]

    for run in (mine, peer):  # warm-up: first calls build kernels, caches, lazy imports
        run() if throughput else run(2)
    load_start = load_average()
    for r in range(repeats):
        order = [("irlhf", mine), ("peer", peer)]
        for name, run in order if r % 2 == 0 else order[::-1]:
            assert torch.get_num_threads() == threads
            sides[name].values.append(once(run))
    load_end = load_average()
    for name, run in (("irlhf", mine), ("peer", peer)):  # one short block each, untimed
        block = (lambda r=run: r()) if throughput else (lambda r=run: r(2))
        sides[name].peak_mib = measure_peak(block)[1]
    a, b = sides["irlhf"].median, sides["peer"].median
    speedup = a / b if throughput else b / a
    return {
        "size": size.name,
        "row": row,
        "label": LABELS[row],
        "peer": PEERS[row],
        "unit": "tokens/s" if throughput else "s/step",
        "irlhf": sides["irlhf"].summary(),
        "peer_result": sides["peer"].summary(),
        "ratio_irlhf_over_peer": a / b,
        "speedup": speedup,
        "target_speedup": TARGETS.get(row) if size is SIZES[0] else None,
        "load_average": {"start": load_start, "end": load_end},
        "steps_per_block": None if throughput else steps,
        "repeats": repeats,
    }


def fmt(value: float, unit: str) -> str:
    return f"{value:,.0f}" if unit == "tokens/s" else f"{value:.3f}"


def print_row(res: dict) -> None:
    unit = res["unit"]

    def cell(s: dict) -> str:
        return f"{fmt(s['median'], unit)} [{fmt(s['min'], unit)}-{fmt(s['max'], unit)}]"

    def mem(s: dict) -> str:
        return "-" if s["peak_rss_mib"] is None else f"{s['peak_rss_mib']:.0f}"

    target = res["target_speedup"]
    verdict = "" if target is None else ("  met" if res["speedup"] >= target else "  MISSED")
    print(
        f"{res['size']:<12} {res['label']:<26} {unit:<8} {cell(res['irlhf']):<26} "
        f"{cell(res['peer_result']):<26} {res['ratio_irlhf_over_peer']:>6.2f} "
        f"{res['speedup']:>6.2f}x{'' if target is None else f' (>={target}x)'}{verdict:<8} "
        f"{mem(res['irlhf']):>6} {mem(res['peer_result']):>6}  "
        f"{res['load_average']['start'][0]:.1f}",
        flush=True,
    )


HEADER = (
    f"{'size':<12} {'measure':<26} {'unit':<8} {'irlhf median [min-max]':<26} "
    f"{'peer median [min-max]':<26} {'ratio':>6} {'speed-up':>22} "
    f"{'MiB':>6} {'peer':>6}  load"
)


def versions() -> dict:
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__}
    out["transformers"] = transformers.__version__
    try:
        import trl

        out["trl"] = trl.__version__
    except ImportError:
        out["trl"] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average: {load_average()}"


def exposure_benchmark() -> str:
    """The exact-metrics benchmark of issue 2 (benchmarks/exposure_metrics.py), captured."""
    import contextlib
    import io

    import exposure_metrics

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exposure_metrics.main()
    return buffer.getvalue()


def markdown(results: dict) -> str:
    """The table of a results.json as Markdown (for the README)."""
    meta = results["meta"]
    lines = [
        f"{meta['cpu']}, {meta['cpus']} CPUs, torch threads {meta['threads']}, "
        f"torch {meta['versions']['torch']}, transformers {meta['versions']['transformers']}, "
        f"TRL {meta['versions']['trl']}; load at start: "
        f"{meta['uptime_start'].split('load average:')[-1].strip()}, at end: "
        f"{meta['uptime_end'].split('load average:')[-1].strip()}",
        "",
        "| size | measure | unit | irlhf median [min-max] | peer | peer median [min-max] | "
        "irlhf/peer | speed-up (target) | peak MiB irlhf / peer | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        unit = r["unit"]

        def cell(s: dict, unit: str = unit) -> str:
            return f"{fmt(s['median'], unit)} [{fmt(s['min'], unit)}-{fmt(s['max'], unit)}]"

        target = r["target_speedup"]
        verdict = ""
        if target is not None:
            verdict = f" (>= {target}: {'met' if r['speedup'] >= target else 'missed'})"
        mem = "/".join(
            "-" if s["peak_rss_mib"] is None else f"{s['peak_rss_mib']:.0f}"
            for s in (r["irlhf"], r["peer_result"])
        )
        peer = r["peer"].split(" with ")[0] + (" (defaults)" if "defaults" in r["peer"] else "")
        lines.append(
            f"| {r['size']} | {r['label']} | {unit} | {cell(r['irlhf'])} | {peer} | "
            f"{cell(r['peer_result'])} | {r['ratio_irlhf_over_peer']:.2f} | "
            f"{r['speedup']:.2f}x{verdict} | {mem} | {r['load_average']['start'][0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repeats per row, small size")
    parser.add_argument("--repeats-other", type=int, default=3, help="... at the other sizes")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="small size only, 2 repeats")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset")
    parser.add_argument("--sizes", default=None, help="comma-separated size indices (0, 1, 2)")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--skip-exposure", action="store_true")
    parser.add_argument("--markdown", metavar="RESULTS_JSON", help="print its table, run nothing")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())), end="")
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("TRL is not installed: `make bench` installs it (pip install -e '.[bench]')")
    quiet()
    timing_malloc()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = SIZES[:1] if args.quick else SIZES
    if args.sizes is not None:
        sizes = [SIZES[int(i)] for i in args.sizes.split(",")]
    rows = [r for r in args.rows.split(",") if r]
    work, clock = Workload(), StepClock()
    started = time.perf_counter()
    up_start = uptime()
    print(f"irlhf vs TRL — {cpu_model()}, {os.cpu_count()} CPUs, torch threads {args.threads}")
    print(
        "env: "
        + ", ".join(f"{k}={os.environ.get(k)}" for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS"))
    )
    print(f"versions: {versions()}")
    print(f"at start: {up_start}")
    print(
        "s/step: seconds per optimiser step (lower is better); tokens/s: higher is better. "
        "ratio = irlhf / peer of the measure; speed-up = how many times faster irlhf is. "
        "MiB = peak RSS above the block's start. load = 1-min load average at the row's start."
    )
    print(HEADER)
    results = []
    for size in sizes:
        teacher = irlhf_side.teacher_for(size)
        for row in rows:
            if row == "sft_trl_defaults" and size is not SIZES[0]:
                continue  # once is enough to show what TRL's defaults cost on a CPU
            steps = 3 if row in SLOW_ROWS else 5
            reps = args.repeats if size is SIZES[0] else args.repeats_other
            reps = 2 if args.quick else (3 if row == "sft_trl_defaults" else reps)
            res = measure_row(row, size, work, teacher, reps, steps, clock, args.threads)
            results.append(res)
            print_row(res)
    exposure = "" if args.skip_exposure else exposure_benchmark()
    if exposure:
        print(exposure, end="")
    up_end = uptime()
    elapsed = time.perf_counter() - started
    print(f"at end: {up_end}")
    print(f"benchmark time: {elapsed / 60:.1f} min")
    meta = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")},
        "versions": versions(),
        "uptime_start": up_start,
        "uptime_end": up_end,
        "seconds": elapsed,
        "workload": work.__dict__,
        "sizes": [s.__dict__ for s in sizes],
        "memory": "peak RSS above the block's starting RSS, one extra block per side (common.py)",
        "timing": "optimiser-step post-hook stamps; per block (last - first) / (steps - 1)",
    }
    # rows this run did not measure (ensemble_*, measure_exposure: written by
    # benchmarks/ensemble.py and benchmarks/measure_exposure.py) are kept as they were
    out = Path(args.out)
    mine = {r["row"] for r in results}
    old = json.loads(out.read_text())["rows"] if out.is_file() else []
    kept = [r for r in old if r.get("row") not in mine]
    out.write_text(
        json.dumps({"meta": meta, "rows": results + kept, "exposure_metrics": exposure}, indent=1)
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
