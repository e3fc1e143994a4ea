"""Where the study notebooks and the parameter presets are: in a source checkout the top-level
``notebooks/`` and ``params/`` folders; in an installed wheel the same files as package data
(``amt_core/notebooks/``, ``amt_core/presets/``, mapped in pyproject.toml). One lookup for both, so
``amt run`` works from any folder once the package is installed. The notebooks are jupytext percent scripts
(``0*_*.py``, read by :mod:`amt_core.pipeline.sources`)."""

from __future__ import annotations

from pathlib import Path

from amt_core.registry import PIPELINE_PRESETS

_PACKAGE = Path(__file__).resolve().parent
#: kind -> (folder inside the installed package, folder of the source checkout)
_FOLDERS = {"notebooks": ("notebooks", "notebooks"), "presets": ("presets", "params")}


def resource_dir(kind: str) -> Path:
    """The folder of the study ``notebooks`` or of the parameter ``presets``."""
    inside, checkout = _FOLDERS[kind]
    for folder in (_PACKAGE / inside, _PACKAGE.parent / checkout):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"the amt {kind} are neither in {_PACKAGE / inside} nor in {_PACKAGE.parent / checkout}: "
        "a damaged installation (reinstall amt)"
    )


def notebook_dir() -> Path:
    return resource_dir("notebooks")


def preset_path(name_or_path: str | Path) -> Path:
    """A parameter file: an existing path as given, else a named preset (``smoke``, ``quick``, ``demo``, ``study``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if (
        str(name_or_path) in PIPELINE_PRESETS
    ):  # a bare name only: a missing path is never swapped for a preset
        return resource_dir("presets") / f"{name_or_path}.yaml"
    raise FileNotFoundError(
        f"parameter file not found: {name_or_path} (give a YAML file, or a preset name: "
        f"{', '.join(PIPELINE_PRESETS)})"
    )
