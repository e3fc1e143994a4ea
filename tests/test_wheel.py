"""The installed package runs the study: a wheel built from this checkout, installed into a fresh virtual
environment outside the repository, runs the smoke preset from a temporary folder (no checkout in sight),
and a user's params file beside an imported cohort works from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from amt_core.pipeline.params import NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_the_wheel():
    from setuptools import find_packages

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(ROOT, include=["amt_core*"]))
    data_only = {"amt_core.notebooks", "amt_core.presets", "amt_core.synth.chest_backgrounds"}
    assert found | data_only == listed


#: what is never copied into the wheel's build: at the top, environments, outputs and an earlier build
#: (setuptools would ship the stale files of build/lib); anywhere, caches and a session's paired notebooks
_TOP_LEVEL = {".venv", ".git", "build", "dist", "runs", "data", "cache", "figures", ".whl", ".gl"}


def _not_sources(folder: str, names: list[str]) -> set[str]:
    top = _TOP_LEVEL if Path(folder) == ROOT else set()
    return {
        n
        for n in names
        if n in top
        or n in ("__pycache__", ".ipynb_checkpoints")
        or n.endswith((".egg-info", "_cache", ".ipynb"))
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel, built from a clean copy of the checkout; the dependencies come
    from this interpreter's site-packages (a .pth line: no download, and amt_core itself is never importable
    from the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=_not_sources)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp / "dist"),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    wheel = next((tmp / "dist").glob("amt-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        shipped = sorted(n for n in whl.namelist() if n.startswith("amt_core/notebooks/"))
    assert shipped == [f"amt_core/notebooks/{nb}.py" for nb in NOTEBOOKS], shipped  # the sources only
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    return venv


def _run(venv: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # the dependencies' data files (nbconvert's templates, kernel specs) lie under this interpreter's prefix
    env = {**os.environ, "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}
    return subprocess.run(
        [str(venv / "bin" / "amt"), *args], cwd=cwd, capture_output=True, text=True, timeout=1200, env=env
    )


@pytest.mark.slow
def test_the_wheel_runs_the_smoke_study_from_any_folder(installed, tmp_path):
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import amt_core; print(amt_core.__file__)"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert not Path(where).is_relative_to(ROOT) and Path(where).is_relative_to(installed)

    out = _run(installed, ["run", "--params", "smoke", "--out", "run", "--quiet"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "report.md").is_file() and (run / "train" / "best.pt").is_file()
    prov = json.loads((run / "provenance.json").read_text())
    notebooks = [k for k in prov["input_hashes"] if Path(k).parent.name == "notebooks"]
    assert len(notebooks) == 5 and all(Path(k).is_relative_to(installed) for k in notebooks)
    assert sorted(Path(k).name for k in notebooks) == [f"{nb}.py" for nb in NOTEBOOKS]
    # the steps' keys hold the installed code's fingerprint, the checkout's (the same sources; its notebooks and
    # presets are not code), and name the bundled chest CTs by their path in the package
    from amt_core.provenance import code_fingerprint

    evaluate = json.loads((run / ".steps" / "03_evaluate.json").read_text())
    assert evaluate["code"] == prov["code_sha256"] == code_fingerprint(ROOT / "amt_core")
    bundled = [k for k in evaluate["inputs"] if "chest_backgrounds" in k]
    assert bundled and all(k.startswith("amt_core/synth/chest_backgrounds/") for k in bundled), bundled

    # a user's own params file beside an imported cohort, run from an unrelated folder
    study = tmp_path / "study"
    study.mkdir()
    (study / "params.yaml").write_text("cohort_csv: ../run/cohort/cases.csv\nn_example_slices: 0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run(
        installed,
        [
            "run",
            "--params",
            str(study / "params.yaml"),
            "--out",
            str(study / "run"),
            "--quiet",
            "--only",
            "01_cohort",
        ],
        cwd=elsewhere,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table1 = (study / "run" / "tables" / "table1.csv").read_text()
    assert "train" in table1 and (study / "run" / ".steps" / "01_cohort.json").is_file()


def test_a_preset_name_that_does_not_exist_is_a_clear_error(tmp_path, capsys):
    from amt_core.cli import main

    assert main(["run", "--params", "demoo", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "demoo" in err and "smoke, demo, study" in err and not (tmp_path / "run").exists()
