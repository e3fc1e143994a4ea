"""Typed parameters of the study notebooks, and their validation.

:data:`PARAMETERS` is the single list: the notebooks' ``parameters`` cells, the preset files in
``params/`` and ``papermill --help-notebook`` all show these names, types, defaults and help texts.
Papermill only *warns* about a parameter the notebook does not declare, so every notebook's first cell
after the parameters calls :func:`check_parameters`, which makes an unknown or invalid parameter an
error naming it; the runner checks the whole preset file up front with :func:`load_params`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from amt_core import registry


class ParameterError(ValueError):
    """An unknown or invalid notebook parameter; the message names every problem."""


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None
    requirement: str = ""  # what ``check`` demands, for the error message

    def problems(self, value: Any) -> list[str]:
        ok_type = isinstance(value, self.type) and not (self.type in (int, float) and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            ok_type = True
        if not ok_type:
            return [f"{self.name} must be {self.type.__name__}, got {type(value).__name__} {value!r}"]
        if self.choices is not None and value not in self.choices:
            return [f"{self.name} must be one of {list(self.choices)}, got {value!r}"]
        if self.check is not None and not self.check(value):
            return [f"{self.name} must be {self.requirement}, got {value!r}"]
        return []


def _p(name, type_, default, help_, **kw) -> Param:
    return Param(name, type_, default, help_, **kw)


_POS = {"check": lambda v: v > 0, "requirement": "> 0"}
_NONNEG = {"check": lambda v: v >= 0, "requirement": ">= 0"}

#: Every parameter of every notebook (a notebook declares a subset, see NOTEBOOK_PARAMETERS).
PARAMETERS: dict[str, Param] = {
    p.name: p
    for p in (
        _p("run_dir", str, "../runs/demo", "run folder that receives every output (the runner sets it)"),
        _p("seed", int, 0, "seed for the cohort, training and bootstrap", **_NONNEG),
        _p(
            "seeds",
            list,
            [],
            "a model per seed on the same cohort, e.g. [0, 1, 2]; must hold seed (empty: one model)",
            check=lambda v: all(type(s) is int and s >= 0 for s in v) and len(set(v)) == len(v),
            requirement="a list of distinct non-negative ints, e.g. [0, 1, 2]",
        ),
        # the run as a whole (no notebook declares it): report.md reads it from the run's provenance.json
        _p(
            "preview",
            bool,
            False,
            "a reduced preview run, not the study's design (the report says so at its top)",
        ),
        # 01_cohort
        _p(
            "cohort_csv",
            str,
            "",
            "existing case table to use instead of generating a cohort (empty: generate)",
        ),
        _p("cohort_preset", str, "demo", "synthetic resolution preset", choices=registry.COHORT_PRESETS),
        _p(
            "n_cases",
            int,
            711,
            "cohort size (711: the study design)",
            check=lambda v: v >= 6,
            requirement=">= 6 (two per split)",
        ),
        _p(
            "real_anatomy",
            int,
            0,
            "test scans with tumours in the bundled real chest CTs (0-4; ignored with cohort_csv)",
            check=lambda v: 0 <= v <= 4,
            requirement="in 0-4 (one scan per bundled real patient)",
        ),
        _p("n_example_slices", int, 3, "example scans shown in 01_cohort", **_NONNEG),
        # 02_train
        _p("model_preset", str, "cpu", "model preset", choices=registry.MODEL_PRESETS),
        _p("train_overrides", dict, {}, "keyword overrides for amt_core.model.train, e.g. {'max_steps': 20}"),
        # 03_evaluate
        _p("n_bootstrap", int, 10_000, "bootstrap resamples for every CI and the FROC bands", **_POS),
        _p("ci_level", float, 0.95, "confidence level", check=lambda v: 0 < v < 1, requirement="in (0, 1)"),
        _p("ci_method", str, "percentile", "bootstrap interval", choices=registry.CI_METHODS),
        _p("min_institution_scans", int, 3, "institutions with fewer scans are pooled in tables", **_POS),
        _p(
            "operating_iou",
            float,
            0.5,
            "IoU hit threshold of the headline operating point",
            check=lambda v: 0 < v < 1,
            requirement="in (0, 1)",
        ),
        _p("eval_overrides", dict, {}, "EvalConfig fields, e.g. {'hit_criterion': '>'}"),
        # 04_figures
        _p("figures_dir", str, "", "where the figures go (empty: RUN/figures)"),
        # 05_explore
        _p("explore_split", str, "test", "split the browser opens on", choices=registry.SPLITS),
        _p("explore_case", str, "", "case the browser opens on (empty: the worst by Dice)"),
    )
}

#: The parameters each notebook declares, in the order of its parameters cell.
NOTEBOOK_PARAMETERS: dict[str, tuple[str, ...]] = {
    "01_cohort": (
        "run_dir",
        "seed",
        "cohort_csv",
        "cohort_preset",
        "n_cases",
        "real_anatomy",
        "n_example_slices",
    ),
    "02_train": ("run_dir", "seed", "seeds", "cohort_csv", "model_preset", "train_overrides"),
    "03_evaluate": (
        "run_dir",
        "seed",
        "seeds",
        "cohort_csv",
        "n_bootstrap",
        "ci_level",
        "ci_method",
        "min_institution_scans",
        "operating_iou",
        "eval_overrides",
    ),
    "04_figures": ("run_dir", "cohort_csv", "figures_dir"),
    "05_explore": ("run_dir", "cohort_csv", "explore_split", "explore_case"),
}
NOTEBOOKS: tuple[str, ...] = tuple(NOTEBOOK_PARAMETERS)

#: Names IPython itself puts in a kernel's namespace (never parameters).
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def validate(values: Mapping[str, Any], allowed: tuple[str, ...] | None = None) -> list[str]:
    """Every problem with ``values``: unknown names (not in ``allowed``) and invalid values."""
    allowed = tuple(PARAMETERS) if allowed is None else allowed
    problems = []
    for name, value in values.items():
        if name in registry.RENAMED and registry.RENAMED[name] in allowed:
            problems.append(f"parameter {name!r} is now called {registry.RENAMED[name]!r}")
        elif name not in allowed:
            problems.append(f"unknown parameter {name!r} (known: {', '.join(allowed)})")
        else:
            problems.extend(PARAMETERS[name].problems(value))
    if isinstance(values.get("eval_overrides"), dict) and "eval_overrides" in allowed:
        problems.extend(_eval_override_problems(values["eval_overrides"]))
    seeds, seed = values.get("seeds"), values.get("seed", PARAMETERS["seed"].default)
    if seeds and not PARAMETERS["seeds"].problems(seeds) and seed not in seeds:
        problems.append(f"seeds must contain seed ({seed!r}), whose model stays the run's; got {seeds!r}")
    return problems


def _eval_override_problems(overrides: Mapping[str, Any]) -> list[str]:
    """Keys of ``eval_overrides`` that are not ``EvalConfig`` fields (a renamed one says its new name)."""
    from dataclasses import fields

    from amt_core.evaluation.config import EvalConfig

    known = [f.name for f in fields(EvalConfig)]
    problems = []
    for key in overrides:
        if key in registry.RENAMED:
            problems.append(f"eval_overrides: {key!r} is now called {registry.RENAMED[key]!r}")
        elif key not in known:
            problems.append(f"eval_overrides: unknown EvalConfig field {key!r} (known: {', '.join(known)})")
    if not problems:
        try:
            EvalConfig(**overrides)
        except (TypeError, ValueError) as exc:
            problems.append(f"eval_overrides: {exc}")
    return problems


def check_parameters(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the parameters in a notebook's namespace (``globals()`` right after its parameters cell).

    Any other user variable present at that point was injected by papermill: an unknown parameter.
    Returns the notebook's parameters as a dict; raises :class:`ParameterError` naming every problem.
    """
    if notebook not in NOTEBOOK_PARAMETERS:
        raise ParameterError(f"unknown notebook {notebook!r}; known: {list(NOTEBOOK_PARAMETERS)}")
    declared = NOTEBOOK_PARAMETERS[notebook]
    given = _names_of_parameter_cells(namespace)
    if given is None:  # no IPython history: every plain variable counts
        given = {
            k
            for k, v in namespace.items()
            if not k.startswith("_")
            and k not in _IPYTHON_NAMES
            and not isinstance(v, ModuleType)
            and not callable(v)
        }
    user = {k: namespace[k] for k in given | set(declared) if k in namespace}
    problems = validate(user, declared)
    missing = [n for n in declared if n not in user]
    problems += [f"parameter {n!r} is missing from the parameters cell" for n in missing]
    if problems:
        raise ParameterError(f"{notebook}: invalid parameters:\n  - " + "\n  - ".join(problems))
    return {n: user[n] for n in declared}


def _names_of_parameter_cells(namespace: Mapping[str, Any]) -> set[str] | None:
    """Names assigned by the cells run just before the check cell: the ``parameters`` cell and, under
    papermill, the injected-parameters cell after it (its source starts with ``# Parameters``).

    Reading IPython's input history (``In``) rather than every global means that rerunning the
    notebook interactively, with later cells' variables around, is not an error. None without ``In``.
    """
    import ast

    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 2:
        return None
    cells = [history[-2]]  # history[-1] is the check cell itself
    if history[-2].lstrip().startswith("# Parameters") and len(history) >= 3:
        cells.append(history[-3])
    names: set[str] = set()
    for source in cells:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a preset file (a flat YAML mapping of parameter names, or a preset name: ``smoke``, ``demo``,
    ``study``) and validate it.

    ``run_dir`` may not be set in the file (the runner sets it from ``--out``). A relative ``cohort_csv`` is
    relative to the file's folder (so a params file beside an imported cohort works from any folder); it
    comes back absolute.
    """
    import yaml

    from amt_core.resources import preset_path

    path = preset_path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping of parameter names to values")
    allowed = tuple(n for n in PARAMETERS if n != "run_dir")
    problems = validate(data, allowed)
    if problems:
        raise ParameterError(f"{path}: invalid parameters:\n  - " + "\n  - ".join(problems))
    if data.get("cohort_csv") and not Path(data["cohort_csv"]).expanduser().is_absolute():
        data["cohort_csv"] = str((path.resolve().parent / Path(data["cohort_csv"]).expanduser()).resolve())
    return data


def notebook_parameters(notebook: str, params: Mapping[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """The parameters to pass to one notebook: the ones it declares, from the preset, plus run_dir."""
    out = {n: params[n] for n in NOTEBOOK_PARAMETERS[notebook] if n in params}
    out["run_dir"] = str(Path(run_dir).resolve())
    if out.get("cohort_csv"):
        out["cohort_csv"] = str(Path(out["cohort_csv"]).resolve())
    return out


def parameters_cell_source(notebook: str) -> str:
    """The text of a notebook's ``parameters`` cell: typed, commented literals."""
    lines = []
    for name in NOTEBOOK_PARAMETERS[notebook]:
        p = PARAMETERS[name]
        if "=" in p.help or "=" in repr(p.default):  # papermill cannot parse a line with two '='
            raise ValueError(f"parameter {name}: help and default may not contain '='")
        choices = f" ({'|'.join(map(str, p.choices))})" if p.choices else ""
        lines.append(f"{name}: {p.type.__name__} = {p.default!r}  # {p.help}{choices}")
    return "\n".join(lines)
