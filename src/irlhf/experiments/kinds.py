"""Where experiment kinds come from: the modules whose import registers them.

Worker processes (the local pool and Ray) start empty; `load_kinds()` imports every module listed
here, so that `register_kind` has run before a worker looks a kind up. Add a science module that
calls `register_kind` to `KIND_MODULES`. For tests and plug-ins, the environment variable
``IRLHF_KIND_MODULES`` (comma-separated module names) adds more; it is inherited by workers.
"""

from __future__ import annotations

import importlib
import os

# ---- the science modules that register experiment kinds (fill me) -------------------------
KIND_MODULES: list[str] = [
    "irlhf.studies.imitation",
    "irlhf.studies.irl",
    "irlhf.studies.preference",
    "irlhf.studies.overoptimization",
    "irlhf.studies.degeneration_kind",
]
# ----------------------------------------------------------------------------------------------

ENV_VAR = "IRLHF_KIND_MODULES"


def kind_modules() -> list[str]:
    """KIND_MODULES followed by the modules named in $IRLHF_KIND_MODULES, without duplicates."""
    extra = [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]
    return list(dict.fromkeys([*KIND_MODULES, *extra]))


def load_kinds() -> None:
    """Import every kind module (idempotent: Python caches imports)."""
    for module in kind_modules():
        importlib.import_module(module)
