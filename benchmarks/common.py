"""What the irlhf and TRL sides of the benchmark share: the model, the data, the clocks.

Both sides get the same tiny GPT-2 (a deep copy of one `CausalLMPolicy.tiny` model), the same
token data and the same batch sizes and lengths. Data are random token ids: the work per step of
every method here does not depend on what the tokens say.

Timing: a global `torch.optim` step post-hook stamps the time after every optimiser step, in
irlhf's loops and in TRL's trainers alike, so "seconds per optimiser step" is measured by the
same instrument on both sides: the time between consecutive steps of a block (so each block's
first step, which pays one-off set-up such as TRL's `train()` preparing its dataloader, is not
counted; everything between two steps is: data collation, generation, reference and teacher
forwards, logging).

Memory: the peak resident set size (RSS) of the process above its RSS at the start of a block,
in one extra block per side after the timed ones. The kernel's high-water mark is reset before
the block (`/proc/self/clear_refs`, Linux); for that block glibc serves every allocation above
64 KiB by mmap and the free heap is trimmed first, so that the RSS follows the live tensors
rather than what the allocator kept from earlier work. (tracemalloc would not see torch's
tensors: they are not allocated by Python's allocator.) The timed blocks run with glibc's
thresholds fixed at their warmed-up values (mmap above 32 MiB, no trimming below 512 MiB), the
state a long-running process reaches anyway, for both sides alike.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from irlhf.policies.causal_lm import CausalLMPolicy
from irlhf.types import Comparisons, Sequences

VOCAB = 512
PROMPT = 8


@dataclass(frozen=True)
class Size:
    """A model size and a completion length: one block of the table."""

    name: str
    n_layer: int
    n_embd: int
    completion: int  # new tokens per sequence for every training method
    sample_tokens: int  # new tokens for the sampler throughput row
    n_head: int = 4

    def policy(self, seed: int = 0) -> CausalLMPolicy:
        return CausalLMPolicy.tiny(
            VOCAB,
            n_layer=self.n_layer,
            n_embd=self.n_embd,
            n_head=self.n_head,
            max_length=256,
            seed=seed,
        )


@dataclass(frozen=True)
class Workload:
    """Batch sizes of every method (the same on both sides)."""

    batch: int = 32  # sequences (SFT, distillation) or comparisons (reward model, DPO) per step
    rloo_prompts: int = 16  # prompts per RLOO step ...
    rloo_samples: int = 4  # ... times completions per prompt
    sampler_batch: int = 64
    dataset: int = 256  # sequences / comparisons / prompts in each data set
    lr: float = 1e-4
    dpo_beta: float = 0.1
    rloo_kl: float = 0.05
    jsd_beta: float = 0.5


def random_tokens(n: int, length: int, seed: int, high: int = VOCAB - 1) -> torch.Tensor:
    """[n, length] ids in [0, high); id 511 is kept out of the data so it can end completions."""
    return torch.randint(0, high, (n, length), generator=torch.Generator().manual_seed(seed))


def sequences(n: int, completion: int, seed: int) -> Sequences:
    """n prompt + completion sequences whose last completion token is 511 (an end token)."""
    tokens = random_tokens(n, PROMPT + completion, seed)
    tokens[:, -1] = VOCAB - 1
    return Sequences.from_prompt_and_completion(tokens[:, :PROMPT], tokens[:, PROMPT:])


def comparisons(n: int, completion: int, seed: int) -> Comparisons:
    """n pairs sharing their prompt."""
    chosen = sequences(n, completion, seed)
    other = sequences(n, completion, seed + 1)
    rejected = Sequences.from_prompt_and_completion(
        chosen.tokens[:, :PROMPT], other.tokens[:, PROMPT:]
    )
    return Comparisons(chosen, rejected)


def lower_half_reward(completion_ids: torch.Tensor) -> torch.Tensor:
    """The RL score of both sides: the fraction of completion tokens with id < 256."""
    return (completion_ids < VOCAB // 2).float().mean(dim=-1)


def hf_copy(policy: CausalLMPolicy):
    """An independent copy of the policy's Hugging Face model (same weights) for the peer."""
    return copy.deepcopy(policy.model)


# ---- clocks -------------------------------------------------------------------------------------


class StepClock:
    """Time stamps of every optimiser step in the process (see the module docstring)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._handle = register_optimizer_step_post_hook(self._stamp)

    def _stamp(self, *_args) -> None:
        self.stamps.append(time.perf_counter())

    def block(self, run: Callable[[], object]) -> tuple[float, int]:
        """Run one block; returns (seconds per step between its steps, number of steps)."""
        self.stamps = []
        run()
        n = len(self.stamps)
        if n < 2:
            raise RuntimeError(f"a timed block took {n} optimiser steps; need >= 2")
        return (self.stamps[-1] - self.stamps[0]) / (n - 1), n


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))


def peak_rss_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def timing_malloc() -> None:
    """glibc's warmed-up thresholds, fixed: big tensors are reused from the heap."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, 512 << 20)


def measure_peak(run: Callable[[], object]) -> tuple[object, float | None]:
    """(result, peak RSS above the starting RSS in MiB) of `run`; None when unsupported."""
    if _LIBC is None or not peak_rss_supported():
        return run(), None
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 64 << 10)
    _LIBC.malloc_trim(0)
    try:
        start = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        result = run()
        return result, max(0, _status_kib("VmHWM") - start) / 1024
    finally:
        timing_malloc()


# ---- results ------------------------------------------------------------------------------------


@dataclass
class Series:
    """Repeated measurements of one side of one row."""

    values: list[float] = field(default_factory=list)
    peak_mib: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def summary(self) -> dict:
        return {
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "values": self.values,
            "peak_rss_mib": self.peak_mib,
        }


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
