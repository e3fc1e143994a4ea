"""What every run folder records: config, package versions (and whether they are the locked ones), git
commit and input hashes."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from amt_core import __version__
from amt_core.atomic import file_hash, write_json

PACKAGES = (
    "torch",
    "monai",
    "numpy",
    "scipy",
    "pandas",
    "nibabel",
    "SimpleITK",
    "pydicom",
    "connected-components-3d",
    "statsmodels",
    "matplotlib",
    "seaborn",
    "papermill",
    "ipywidgets",
)


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"amt": __version__, "python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


#: where an untracked file changes what a run computes (git pathspecs from the top of the checkout)
UNTRACKED_MATTERS = (":/amt_core", ":/notebooks", ":/params")


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout holding ``path`` (this package by default), '+dirty' if a tracked file is
    modified or an untracked one lies among the code, notebooks or presets (:data:`UNTRACKED_MATTERS`)."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        # a modified tracked file anywhere, or a new (not ignored) file among the code, notebooks and presets
        dirty = (
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=all", "--", *UNTRACKED_MATTERS],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def hash_files(paths: Iterable[str | Path]) -> dict[str, str]:
    return {str(p): file_hash(p) for p in paths}


def provenance(config: dict[str, Any] | None = None, inputs: Iterable[str | Path] = ()) -> dict[str, Any]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "config": config or {},
        "versions": package_versions(),
        "environment_lock": _lock_status(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "input_hashes": hash_files(inputs),
    }


def _lock_status() -> dict[str, Any]:
    """The lock's file name and SHA-256 and whether the installed set matched it (amt_core.lock)."""
    from amt_core.lock import lock_status

    return lock_status()


def write_provenance(
    run_dir: str | Path,
    config: dict[str, Any] | None = None,
    inputs: Iterable[str | Path] = (),
    name: str = "provenance.json",
) -> Path:
    """Write ``run_dir/name`` holding the config, versions, git commit and SHA-256 of each input."""
    return write_json(Path(run_dir) / name, provenance(config, inputs))
