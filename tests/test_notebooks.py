"""The stored notebooks: no outputs, one typed `parameters` cell, exactly what build_notebooks.py writes,
parameters visible to `papermill --help-notebook`, and unknown or invalid parameters an error.

(Executing every notebook on the smoke preset is the session fixture of test_pipeline.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from amt_core.pipeline.params import NOTEBOOK_PARAMETERS, PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NAMES = list(NOTEBOOK_PARAMETERS)


def _read(name: str):
    return nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)


def test_the_five_notebooks_are_there():
    assert sorted(p.stem for p in NB_DIR.glob("0*_*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs_and_with_one_parameters_cell(name):
    nb = _read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: a cell has outputs"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters'"
    params_cell = nb.cells[tagged[0]].source
    for line, param in zip(params_cell.splitlines(), NOTEBOOK_PARAMETERS[name], strict=True):
        # typed, commented literals: `name: type = literal  # help`
        assert line.startswith(f"{param}: {PARAMETERS[param].type.__name__} = "), line
        assert "  # " in line, line
    # the next cell validates them (papermill only warns about unknown parameters)
    assert f'check_parameters("{name}", globals())' in nb.cells[tagged[0] + 1].source
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebooks_are_what_the_build_script_writes(name):
    sys.path.insert(0, str(NB_DIR))
    try:
        import build_notebooks
    finally:
        sys.path.remove(str(NB_DIR))
    stored = (NB_DIR / f"{name}.ipynb").read_text().rstrip("\n")
    assert nbformat.writes(build_notebooks.build(name)).rstrip("\n") == stored, \
        f"notebooks/{name}.ipynb differs from build_notebooks.py: run `python notebooks/build_notebooks.py`"


@pytest.mark.parametrize("name", NAMES)
def test_long_cells_are_labelled(name):
    nb = _read(name)
    long = [c for c in nb.cells if c.cell_type == "code" and any(k in c.source for k in (
        "build_cohort(", "train(", "predict(", "evaluate_predictions(", "analyse(", "make_all_figures("))]
    for cell in long:
        assert cell.source.startswith("#papermill_description="), cell.source[:60]


@pytest.mark.parametrize("name", NAMES)
def test_papermill_help_lists_the_parameters(name):
    exe = Path(sys.executable).with_name("papermill")
    out = subprocess.run([str(exe), "--help-notebook", str(NB_DIR / f"{name}.ipynb")], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    for param in NOTEBOOK_PARAMETERS[name]:
        p = PARAMETERS[param]
        assert f"{param}: {p.type.__name__} (default {p.default!r})" in out, f"{param} missing:\n{out}"
        assert p.help.split("(")[0].strip() in out.replace("\n", " ")


def test_python3_kernel_runs_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    from amt_core.pipeline.run import ensure_kernel

    name = ensure_kernel()
    spec = KernelSpecManager().get_kernel_spec(name)
    cmd = KernelManager(kernel_name=name).format_kernel_cmd()
    assert Path(cmd[0]).resolve() == Path(sys.executable).resolve(), (spec.argv, cmd)


def _execute(tmp_path, parameters):
    import papermill as pm

    from amt_core.pipeline.run import ensure_kernel

    return pm.execute_notebook(str(NB_DIR / "05_explore.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters=parameters, kernel_name=ensure_kernel(), progress_bar=False,
                               cwd=str(tmp_path))


@pytest.mark.parametrize("parameters, message", [
    ({"run_dir": "x", "n_bootstrap": 5}, "unknown parameter 'n_bootstrap'"),
    ({"run_dir": "x", "explore_split": "validation"}, "explore_split must be one of"),
    ({"run_dir": 3}, "run_dir must be str"),
])
def test_unknown_or_invalid_parameter_fails_in_the_first_cell(tmp_path, parameters, message):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as info:
        _execute(tmp_path, parameters)
    assert info.value.ename == "ParameterError"
    assert message in info.value.evalue
    assert "check_parameters" in info.value.source
