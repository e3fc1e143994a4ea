"""The study notebooks' sources (jupytext percent scripts): one typed `parameters` cell from the single
parameter list, no outputs stored, paired notebooks in sync, an edit saved in JupyterLab kept in the `.py` and
run by the runner, parameters visible to `papermill --help-notebook`, unknown or invalid parameters an error;
and `amt lab`.

(Executing every notebook on the smoke preset is the session fixture of test_pipeline.py.)
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from amt_core.pipeline.params import NOTEBOOK_PARAMETERS, PARAMETERS
from amt_core.pipeline.sources import (
    NotebookSourceError,
    check_sources,
    pair_problems,
    read_source,
    step_notebook,
    write_notebook,
)

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NAMES = list(NOTEBOOK_PARAMETERS)


def test_the_five_sources_are_there():
    assert sorted(p.stem for p in NB_DIR.glob("0*_*.py")) == NAMES
    assert not (NB_DIR / "build_notebooks.py").exists()


@pytest.mark.parametrize("name", NAMES)
def test_one_parameters_cell_from_the_parameter_list(name):
    nb = read_source(NB_DIR / f"{name}.py")
    nbformat.validate(nb)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters'"
    params_cell = nb.cells[tagged[0]].source
    for line, param in zip(params_cell.splitlines(), NOTEBOOK_PARAMETERS[name], strict=True):
        # typed, commented literals in the order, with the defaults, of amt_core.pipeline.params
        p = PARAMETERS[param]
        literal, _, comment = line.partition("  # ")
        assert literal == f"{param}: {p.type.__name__} = {p.default!r}", f"{name}: {line!r}"
        assert comment.strip(), f"{name}: {param} has no help comment"
    # the next cell validates them (papermill only warns about unknown parameters)
    assert f'check_parameters("{name}", globals())' in nb.cells[tagged[0] + 1].source
    assert nb.metadata.kernelspec.name == "python3"


def test_outputs_are_never_stored():
    """The sources cannot hold outputs; the paired .ipynb (a session's outputs) is ignored by git."""
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(NB_DIR))
    formats = config.formats if isinstance(config.formats, list) else [config.formats]
    assert set(",".join(formats).split(",")) == {"ipynb", "py:percent"}  # paired
    for name in NAMES:
        nb = read_source(NB_DIR / f"{name}.py")
        assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *(f"notebooks/{n}.ipynb" for n in NAMES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == [f"notebooks/{n}.ipynb" for n in NAMES], "notebooks/*.ipynb must be in .gitignore"


def test_paired_notebooks_are_in_sync():
    assert pair_problems(NB_DIR) == []


def test_an_ipynb_edited_without_jupytext_is_not_ignored(tmp_path):
    shutil.copy(NB_DIR / "04_figures.py", tmp_path)
    paired = write_notebook(tmp_path / "04_figures.py", tmp_path / "04_figures.ipynb")
    assert pair_problems(tmp_path) == [] and check_sources(tmp_path, ["04_figures"]) is None
    nb = nbformat.read(paired, as_version=4)
    nb.cells[-1].source += "\nprint('edited elsewhere')"
    nbformat.write(nb, paired)
    later = (tmp_path / "04_figures.py").stat().st_mtime_ns + 10**9
    os.utime(paired, ns=(later, later))
    [problem] = pair_problems(tmp_path)
    assert "04_figures.ipynb is newer than 04_figures.py" in problem and "jupytext --sync" in problem
    with pytest.raises(NotebookSourceError, match="is newer than 04_figures.py"):
        step_notebook(tmp_path, "04_figures")  # the runner would lose the edit: refused
    # the .py newer (a pull, an edit in an editor): the source wins, the pair is reported out of sync
    os.utime(paired, ns=(0, 0))
    [problem] = pair_problems(tmp_path)
    assert "is older than 04_figures.py" in problem
    source = read_source(NB_DIR / "04_figures.py")
    assert step_notebook(tmp_path, "04_figures").cells[-1].source == source.cells[-1].source
    with pytest.raises(NotebookSourceError, match="05_explore.py: the notebook source is missing"):
        check_sources(tmp_path, ["05_explore"])


@pytest.mark.parametrize("name", NAMES)
def test_long_cells_are_labelled(name):
    nb = read_source(NB_DIR / f"{name}.py")
    long = [
        c
        for c in nb.cells
        if c.cell_type == "code"
        and any(
            k in c.source
            for k in (
                "build_cohort(",
                "train(",
                "predict(",
                "predict_and_evaluate(",
                "evaluate_predictions(",
                "analyse(",
                "make_all_figures(",
            )
        )
    ]
    for cell in long:
        assert cell.source.startswith("#papermill_description="), cell.source[:60]


@pytest.mark.parametrize("name", NAMES)
def test_papermill_sees_the_parameters(name, tmp_path):
    """What `papermill --help-notebook` lists (papermill's own inspection, in this process)."""
    from papermill.inspection import inspect_notebook

    found = inspect_notebook(str(write_notebook(NB_DIR / f"{name}.py", tmp_path / f"{name}.ipynb")))
    assert list(found) == list(NOTEBOOK_PARAMETERS[name])
    for param, seen in found.items():
        p = PARAMETERS[param]
        assert (seen["inferred_type_name"], seen["default"]) == (p.type.__name__, repr(p.default)), param
        assert seen["help"].startswith(p.help), param


def test_papermill_help_notebook_on_the_written_notebook(tmp_path):
    exe = Path(sys.executable).with_name("papermill")
    name = "03_evaluate"  # the most parameters
    notebook = write_notebook(NB_DIR / f"{name}.py", tmp_path / f"{name}.ipynb")
    out = subprocess.run(
        [str(exe), "--help-notebook", str(notebook)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
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


def _execute(folder: Path, out: Path, parameters: dict):
    """Execute 05_explore as the runner does: the notebook of its source, with papermill."""
    import papermill as pm

    from amt_core.pipeline.run import ensure_kernel

    return pm.execute_notebook(
        step_notebook(folder, "05_explore"),
        str(out),
        parameters=parameters,
        kernel_name=ensure_kernel(),
        progress_bar=False,
        cwd=str(out.parent),
    )


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"run_dir": "x", "n_bootstrap": 5}, "unknown parameter 'n_bootstrap'"),
        ({"run_dir": 3}, "run_dir must be str"),
    ],
)
def test_unknown_or_invalid_parameter_fails_in_the_first_cell(tmp_path, parameters, message):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as info:
        _execute(NB_DIR, tmp_path / "out.ipynb", parameters)
    assert info.value.ename == "ParameterError"
    assert message in info.value.evalue
    assert "check_parameters" in info.value.source


def test_an_edit_saved_in_jupyterlab_is_kept_and_run(tmp_path, monkeypatch):
    """JupyterLab's jupytext contents manager opens the .py as a notebook and saves an edit back to it (a
    one-line diff); the step key changes and the runner executes the edited cell."""
    from jupytext import TextFileContentsManager
    from papermill.exceptions import PapermillExecutionError

    import amt_core.pipeline.run as run
    from amt_core.layout import RunLayout
    from amt_core.pipeline.hashes import FileHashes

    folder = tmp_path / "notebooks"
    shutil.copytree(NB_DIR, folder, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    before = (folder / "05_explore.py").read_text()
    monkeypatch.setattr(run, "NOTEBOOK_DIR", folder)
    step = next(s for s in run.STEPS if s.notebook == "05_explore")
    layout = RunLayout.of(tmp_path / "run")

    def key() -> str:
        hasher = FileHashes(tmp_path / "h.json")
        return run._step_key(step, layout, {"explore_split": "test"}, "", hasher, run.code_parts())[0]

    key_before = key()
    manager = TextFileContentsManager(root_dir=str(folder))
    model = manager.get("05_explore.py", content=True, type="notebook")
    check = next(c for c in model["content"]["cells"] if "check_parameters(" in c["source"])
    check["source"] = "print('edited in JupyterLab')\n" + check["source"]
    manager.save(model, "05_explore.py")

    after = (folder / "05_explore.py").read_text().splitlines()
    diff = list(difflib.unified_diff(before.splitlines(), after, lineterm="", n=0))[2:]  # past the names
    assert [line for line in diff if not line.startswith("@@")] == ["+print('edited in JupyterLab')"], diff
    assert (folder / "05_explore.ipynb").is_file() and pair_problems(folder) == []  # paired, in sync
    assert key() != key_before
    with pytest.raises(PapermillExecutionError) as info:  # stop in the check cell: no run folder needed
        _execute(folder, tmp_path / "out.ipynb", {"run_dir": "x", "explore_split": "validation"})
    assert "explore_split must be one of" in info.value.evalue
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    printed = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert "edited in JupyterLab\n" in printed


def test_leakage_evidence_is_the_leakage_checks_computation():
    """01_cohort shows leakage_evidence; read_cases refuses the same leaks (one computation)."""
    import pandas as pd

    from amt_core.data.cases import leakage_evidence, leakage_problems

    cases = pd.DataFrame(
        {
            "patient_id": ["p1", "p2", "p3", "p4", "p5"],
            "split": ["train", "tune", "test", "test", "test"],
            "institution_id": ["A", "B", "C", "D", "D"],
        }
    )
    assert leakage_evidence(cases) == {
        "test institutions": 2,
        "of them also in train/tune": 0,
        "patients in more than one split": 0,
    }
    assert leakage_problems(cases) == []
    leaked = cases.assign(patient_id=["p1", "p2", "p1", "p4", "p5"], institution_id=["A", "C", "C", "D", "D"])
    assert leakage_evidence(leaked) == {
        "test institutions": 2,
        "of them also in train/tune": 1,
        "patients in more than one split": 1,
    }
    assert leakage_problems(leaked) == [
        "leakage: patient p1 is in several splits (test, train)",
        "leakage: test-split institution(s) ['C'] also appear in train/tune (the external test must be "
        "institution-disjoint)",
    ]


# --- amt lab --------------------------------------------------------------------------------------------
def _lab(args: list[str], capsys) -> tuple[int, str, str]:
    from amt_core.cli import main

    code = main(["lab", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_lab_starts_jupyterlab_on_the_run_with_the_projects_kernel(tmp_path, monkeypatch, capsys):
    from amt_core.pipeline.run import ensure_kernel

    code, out, _ = _lab([str(tmp_path), "--print-command", "--no-browser", "--port", "8890"], capsys)
    assert code == 0
    cmd = shlex.split(out)
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in cmd and "--no-browser" in cmd
    assert f"--MappingKernelManager.default_kernel_name={ensure_kernel()}" in cmd
    assert "--ServerApp.port=8890" in cmd
    # without a folder: the run under runs/ evaluated last, else the working directory
    monkeypatch.chdir(tmp_path)
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in shlex.split(_lab(["--print-command"], capsys)[1])
    for name, finished in (("old", "2026-01-02T00:00:00+00:00"), ("new", "2026-03-01T00:00:00+00:00")):
        steps = tmp_path / "runs" / name / ".steps"
        steps.mkdir(parents=True)
        (steps / "03_evaluate.json").write_text(json.dumps({"finished": finished}))
    cmd = shlex.split(_lab(["--print-command"], capsys)[1])
    assert f"--ServerApp.root_dir={(tmp_path / 'runs' / 'new').resolve()}" in cmd


def test_lab_pairs_the_study_sources_it_opens(tmp_path):
    from amt_core.pipeline.lab import pair_notebooks

    shutil.copytree(NB_DIR, tmp_path / "nb", ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    assert sorted(p.name for p in pair_notebooks(tmp_path / "nb")) == [f"{n}.ipynb" for n in NAMES]
    assert pair_problems(tmp_path / "nb") == [] and pair_notebooks(tmp_path / "nb") == []
    assert pair_notebooks(tmp_path) == []  # not a folder of paired sources


@pytest.mark.parametrize("make", [None, "file"])
def test_lab_refuses_a_missing_folder(tmp_path, capsys, make):
    target = tmp_path / "no-such-run"
    if make:
        target.write_text("not a folder")
    code, out, err = _lab([str(target), "--print-command"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(target) in err
    assert ("is a file, not a folder" if make else "no such folder") in err


def test_a_step_kernel_imports_the_amt_core_whose_code_the_step_key_holds(tmp_path, monkeypatch):
    """A step's key and provenance.json name the code of the amt_core `amt run` imports; its kernel must import
    that one too, not another found first on its own path (here a decoy on PYTHONPATH; in practice the editable
    install of another checkout)."""
    import papermill as pm

    from amt_core.pipeline.run import ensure_kernel, kernel_imports_this_package
    from amt_core.provenance import PACKAGE_DIR

    decoy = tmp_path / "decoy" / "amt_core"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(decoy.parent))
    src = tmp_path / "probe.ipynb"
    cell = nbformat.v4.new_code_cell("import amt_core\nprint(amt_core.__file__)")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), src)

    def imported() -> Path:
        out = tmp_path / "out.ipynb"
        pm.execute_notebook(src, out, kernel_name=ensure_kernel(), cwd=str(tmp_path), progress_bar=False)
        return Path(nbformat.read(out, as_version=4).cells[0].outputs[0]["text"].strip()).resolve().parent

    assert imported() == decoy.resolve()  # what a kernel would run without it
    with kernel_imports_this_package():
        assert imported() == PACKAGE_DIR
    assert os.environ["PYTHONPATH"] == str(decoy.parent)  # restored
