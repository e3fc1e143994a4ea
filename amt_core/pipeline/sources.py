"""The study notebooks' sources: jupytext percent scripts (``notebooks/01_cohort.py`` ...).

The ``.py`` is the notebook: tracked in git, diffed as text, opened and saved as a notebook by JupyterLab
(jupytext's contents manager; ``notebooks/jupytext.toml`` pairs it with an ``.ipynb`` that keeps a session's
outputs and is never tracked). The runner reads the ``.py`` (:func:`step_notebook`) and hands the notebook
to papermill; the step key hashes the ``.py``. A paired ``.ipynb`` that holds an edit the ``.py`` lacks
(saved by a tool that does not know jupytext) is an error, never silently ignored (:func:`pair_problems`).
"""

from __future__ import annotations

from pathlib import Path

#: the suffix of a notebook source (jupytext percent format)
SOURCE_SUFFIX = ".py"
FORMAT = "py:percent"


class NotebookSourceError(ValueError):
    """A notebook source that is missing, unreadable, or out of sync with its paired ``.ipynb``."""


def source_path(folder: str | Path, name: str) -> Path:
    """``folder/name.py``; :class:`NotebookSourceError` naming the file when it is missing."""
    path = Path(folder) / f"{name}{SOURCE_SUFFIX}"
    if not path.is_file():
        raise NotebookSourceError(
            f"{path}: the notebook source is missing (a damaged checkout or installation)"
        )
    return path


def read_source(path: str | Path):
    """The notebook of a percent script, without outputs, with stable cell ids (``{stem}-{index:02d}``)."""
    import jupytext

    path = Path(path)
    try:
        nb = jupytext.read(path, fmt=FORMAT)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NotebookSourceError(f"{path}: not a readable jupytext percent script: {exc}") from exc
    nb.metadata.pop("jupytext", None)  # how the text was read: not the notebook's (a paired .ipynb has none)
    for i, cell in enumerate(nb.cells):  # jupytext draws random ids: the same source gives the same notebook
        cell["id"] = f"{path.stem}-{i:02d}"
    return nb


def write_notebook(source: str | Path, target: str | Path) -> Path:
    """Write the notebook of ``source`` as an ``.ipynb`` (for ``papermill --help-notebook``, or to read)."""
    import nbformat

    from amt_core.atomic import write_text

    return write_text(target, nbformat.writes(read_source(source)))


def step_notebook(folder: str | Path, name: str):
    """The notebook the runner executes for step ``name``: ``folder/name.py``, refused while a paired
    ``.ipynb`` beside it holds an edit the ``.py`` lacks."""
    check_sources(folder, [name])
    return read_source(source_path(folder, name))


def check_sources(folder: str | Path, names: list[str]) -> None:
    """Every source of ``names`` is there and no paired ``.ipynb`` holds an edit its ``.py`` lacks; else
    :class:`NotebookSourceError` naming the first problem and what to do."""
    for name in names:
        source_path(folder, name)
    lost = [message for newer, message in _unsynced(folder, names) if newer]
    if lost:
        raise NotebookSourceError(lost[0])


def pair_problems(folder: str | Path, names: list[str] | None = None) -> list[str]:
    """Every ``name.ipynb`` beside ``name.py`` whose cells (type and source) differ from the script's, with
    what to do; an ``.ipynb`` without a script is not a study notebook and is not checked."""
    return [message for _, message in _unsynced(folder, names)]


def _unsynced(folder: str | Path, names: list[str] | None) -> list[tuple[bool, str]]:
    """(whether the ``.ipynb`` is the newer file, what to do) for each pair out of sync."""
    import nbformat

    folder = Path(folder)
    names = sorted(p.stem for p in folder.glob(f"0*_*{SOURCE_SUFFIX}")) if names is None else names
    problems = []
    for name in names:
        script, paired = folder / f"{name}{SOURCE_SUFFIX}", folder / f"{name}.ipynb"
        if not (script.is_file() and paired.is_file()):
            continue
        try:
            other = nbformat.read(paired, as_version=4)
        except (OSError, ValueError) as exc:
            problems.append((True, f"{paired}: unreadable ({exc}); delete it ({script.name} is the source)"))
            continue
        if _cells(other) == _cells(read_source(script)):
            continue
        if paired.stat().st_mtime_ns > script.stat().st_mtime_ns:
            problems.append(
                (
                    True,
                    f"{paired} is newer than {script.name} and differs from it (edited "
                    f"without jupytext?): run `jupytext --sync {paired}` to write the edit "
                    "to the .py, or delete the .ipynb",
                )
            )
        else:
            problems.append(
                (
                    False,
                    f"{paired} is older than {script.name} and differs from it: run "
                    f"`jupytext --sync {script}` (or open it in JupyterLab), or delete "
                    "the .ipynb",
                )
            )
    return problems


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]
