"""Helpers shared by the benchmark scripts: what code and packages a result was measured with."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("datastores", "indexers", "rag", "evaluators")


def git_state() -> dict:
    """Commit of the checkout and whether the library code differs from it (results depend on it)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    changed = git("status", "--porcelain", "--", *LIBRARY)
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "library_changes_not_committed": bool(changed) if changed is not None else None}


def package_versions(*packages: str) -> dict:
    """Python's version and each installed package's (None where it is not installed)."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def short_path(p: Path) -> str:
    """A path relative to the checkout (or its parent), so results name no machine paths."""
    p = Path(p).resolve()
    for base, label in ((REPO, "<repo>"), (REPO.parent, "<repo>/..")):
        if p.is_relative_to(base):
            return f"{label}/{p.relative_to(base)}"
    return str(p)
