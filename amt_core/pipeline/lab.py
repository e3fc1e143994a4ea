"""``amt lab``: JupyterLab on a run folder (or any folder), with the project's kernel.

The kernel is this interpreter's (:func:`amt_core.pipeline.run.ensure_kernel` registers one when another
``python3`` shadows it) and is the default for new notebooks. jupytext's server extension (installed with
jupytext) opens the study notebooks' percent scripts as notebooks, so ``amt lab notebooks`` in a checkout
edits the sources themselves; every save lands in the ``.py``. Before it starts, the study sources of the
folder get their missing paired ``.ipynb`` (:func:`pair_notebooks`), which a double click opens.
"""

from __future__ import annotations

import sys
from pathlib import Path


def lab_folder(folder: str | Path | None = None, runs_root: str | Path = "runs") -> Path:
    """The folder JupyterLab opens: ``folder`` (which must exist), else the run under ``runs_root`` evaluated
    last, else the working directory."""
    from amt_core.layout import latest_run

    if folder is None:
        try:
            return latest_run(runs_root).resolve()
        except FileNotFoundError:
            return Path.cwd()
    path = Path(folder).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "no such folder"
        raise FileNotFoundError(
            f"{folder}: {what} (give a run folder such as runs/demo, or omit it to open "
            f"the run under {runs_root}/ evaluated last)"
        )
    return path.resolve()


def lab_command(
    folder: Path, kernel: str, *, port: int | None = None, browser: bool = True, allow_root: bool = False
) -> list[str]:
    """The command that starts JupyterLab rooted at ``folder`` with ``kernel`` as the default kernel."""
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={folder}",
        f"--MappingKernelManager.default_kernel_name={kernel}",
    ]
    if port is not None:
        cmd.append(f"--ServerApp.port={port}")
    if not browser:
        cmd.append("--no-browser")
    if allow_root:
        cmd.append("--allow-root")
    return cmd


def pair_notebooks(folder: Path) -> list[Path]:
    """Write the missing paired ``NAME.ipynb`` beside each study source ``NAME.py`` of ``folder`` (a folder
    whose ``jupytext.toml`` pairs them, i.e. a checkout's ``notebooks/``) as ``jupytext --sync`` does;
    returns the files written."""
    from jupytext.cli import jupytext

    from amt_core.pipeline.params import NOTEBOOKS

    if not (folder / "jupytext.toml").is_file():
        return []
    missing = [
        folder / f"{name}.py"
        for name in NOTEBOOKS
        if (folder / f"{name}.py").is_file() and not (folder / f"{name}.ipynb").exists()
    ]
    if missing:
        jupytext(["--sync", "--quiet", *map(str, missing)])
    return [p.with_suffix(".ipynb") for p in missing]
