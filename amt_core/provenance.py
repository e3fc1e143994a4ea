"""What every run folder records: config, package versions (and whether they are the locked ones), git
commit, a fingerprint of amt's own code and input hashes."""

from __future__ import annotations

import hashlib
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
#: the libraries that only draw the figures or run and show the notebooks: recorded, not in a step's key
DISPLAY_PACKAGES = ("matplotlib", "seaborn", "papermill", "ipywidgets")
#: the libraries whose version can change what a run computes (reading volumes, training, statistics): their
#: versions are part of each step's key in `amt run` (:func:`result_versions`), so an upgrade re-runs the steps
RESULT_PACKAGES = tuple(p for p in PACKAGES if p not in DISPLAY_PACKAGES)


def package_versions(names: Iterable[str] = PACKAGES, *, own: bool = True) -> dict[str, str | None]:
    """The installed version of each of ``names`` (None where missing), after amt's and Python's (``own``)."""
    out: dict[str, str | None] = {"amt": __version__, "python": platform.python_version()} if own else {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def result_versions() -> dict[str, str | None]:
    """Python's minor version and the versions of :data:`RESULT_PACKAGES` (None where one is not installed)."""
    return {"python": "{}.{}".format(*sys.version_info[:2]), **package_versions(RESULT_PACKAGES, own=False)}


#: the package's own folder (a checkout's amt_core/, or an installed one in site-packages)
PACKAGE_DIR = Path(__file__).resolve().parent
#: folders of an installed package that hold no code of it: the study notebooks (each step's key holds its own
#: notebook) and the parameter presets (a step's key holds the parameters' values); a checkout keeps them
#: outside amt_core/, so leaving them out gives a checkout and its wheel the same fingerprint
NOT_CODE = ("notebooks", "presets")


def code_files(package: Path = PACKAGE_DIR) -> list[Path]:
    """The package's Python sources, sorted: every ``*.py`` under ``package`` except :data:`NOT_CODE`,
    ``__pycache__`` and hidden files and folders (an editor's or JupyterLab's ``.ipynb_checkpoints``). Its data
    files are not code: the bundled chest CTs are inputs of the steps that read them (``amt_core.pipeline.run``),
    the environment locks are stated by :func:`result_versions`."""
    inside = ((f, f.relative_to(package).parts) for f in package.rglob("*.py"))
    return sorted(
        f
        for f, parts in inside
        if parts[0] not in NOT_CODE
        and "__pycache__" not in parts
        and not any(p.startswith(".") for p in parts)
    )


def code_fingerprint(package: Path = PACKAGE_DIR) -> str:
    """SHA-256 over :func:`code_files` of ``package``, each by its path inside the package and its content
    with line endings as LF: the same for two copies of the same code wherever they lie (a Windows checkout's
    CRLF included), another when one file changes, is added, removed or renamed."""
    h = hashlib.sha256()
    for f in code_files(package):
        text = f.read_bytes().replace(b"\r\n", b"\n")
        h.update(f"{f.relative_to(package).as_posix()}\0{hashlib.sha256(text).hexdigest()}\n".encode())
    return h.hexdigest()


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
        "code_sha256": code_fingerprint(),
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
