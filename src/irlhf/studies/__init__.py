"""The essay's claims as studies (see `irlhf.studies.base`).

Each study module calls `register_study` at import. `load_studies()` imports the modules listed
in `STUDY_MODULES` (fill it) and those named in $IRLHF_STUDY_MODULES (comma-separated; for tests
and plug-ins).
"""

from __future__ import annotations

import importlib
import os

from irlhf.studies.base import (
    PROFILES,
    STUDIES,
    Study,
    register_study,
    run_studies,
    run_study,
)

# ---- the modules that register studies (fill me) -------------------------------------------
STUDY_MODULES: list[str] = [  # the essay's order (the report's)
    "irlhf.studies.compounding",
    "irlhf.studies.misspecification",
    "irlhf.studies.recovery",
    "irlhf.studies.decomposition",
    "irlhf.studies.outperform",
    "irlhf.studies.reward_shift",
    "irlhf.studies.overoptimization",
    "irlhf.studies.degeneration",
]
# ----------------------------------------------------------------------------------------------

ENV_VAR = "IRLHF_STUDY_MODULES"


def load_studies() -> None:
    """Import every study module (and, through them, the kinds they use)."""
    extra = [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]
    for module in dict.fromkeys([*STUDY_MODULES, *extra]):
        importlib.import_module(module)


__all__ = [
    "PROFILES",
    "STUDIES",
    "STUDY_MODULES",
    "Study",
    "load_studies",
    "register_study",
    "run_studies",
    "run_study",
]
