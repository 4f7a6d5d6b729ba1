"""Process settings for both sides of the benchmark, applied before torch is imported.

OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep instead of spinning while they wait. On a CPU
shared with other processes, spinning threads steal the cores that the others need: measured
here, a training step with 2 spinning threads under load was ~5x slower than with 2 sleeping
ones. It applies to the whole process, so to irlhf and TRL alike. A value already set in the
environment is kept. TQDM_DISABLE=1 silences TRL's progress bars.
"""

from __future__ import annotations

import os
import sys

SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE", "TQDM_DISABLE": "1"}


def reexec_with_settings() -> None:
    """Re-execute the running script once with SETTINGS in its environment (no-op if set)."""
    missing = {k: v for k, v in SETTINGS.items() if k not in os.environ}
    if missing and "IRLHF_BENCH_CHILD" not in os.environ:
        os.environ.update(missing)
        os.environ["IRLHF_BENCH_CHILD"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
