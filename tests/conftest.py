"""Suite-wide settings: one torch thread per test process.

The models in tests are tiny; with 2 threads on a 2-core machine that is also running other work,
per-op threading overhead made RL tests 5-10x slower than with one thread (measured)."""

import torch

torch.set_num_threads(1)
