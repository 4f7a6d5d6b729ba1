"""Suite-wide settings: one torch thread per test process.

The models in tests are tiny; with 2 threads on a 2-core machine that is also running other work,
per-op threading overhead made RL tests 5-10x slower than with one thread (measured)."""

from collections.abc import Iterator

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for the test, the thread count restored afterwards (for modules that
    must not depend on what an earlier test left set: `pytestmark = usefixtures("one_thread")`).
    Tiny models gain nothing from intra-op threads, and on a shared, oversubscribed CPU two
    threads ran the policy-gradient tests ~7x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
