"""Fixtures for the platform tests: the toy "counter" kind, registered here and in workers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _counter_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers (spawned, Ray, subprocesses) import the toy kind's module by the name it was
    registered from ("toykind"), so they need this directory on $PYTHONPATH."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(HERE), path) if p))
    if str(HERE) not in sys.path:
        monkeypatch.syspath_prepend(str(HERE))
    import toykind  # noqa: F401  (registers "counter" in this process)
