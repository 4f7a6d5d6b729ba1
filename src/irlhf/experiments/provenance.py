"""What produced a result: software versions, machine, date (shown in the report)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata

PACKAGES = ("irlhf", "torch", "transformers", "numpy", "pandas", "pydantic", "safetensors", "ray")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def software_versions() -> dict[str, str]:
    """Versions of Python and the main packages (read from metadata; nothing is imported)."""
    versions = {"python": sys.version.split()[0]}
    versions.update({package: _version(package) for package in PACKAGES})
    versions["platform"] = platform.platform()
    versions["cpu_count"] = str(os.cpu_count())
    return versions


def utc_now() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
