"""The install story: environment.yml matches pyproject, the package imports silently and lightly,
and the set-up never asks for a CUDA build of torch on CPU-only Linux."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_packages_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "amt"
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_names = {_name(r) for r in pip_section if not r.startswith("-")}
    project = _pyproject()["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    wanted |= {_name(r) for r in project["optional-dependencies"]["test"]}
    assert wanted <= env_names, f"only in pyproject: {wanted - env_names}"


def test_lock_pins_every_dependency_within_pyprojects_ranges():
    from packaging.requirements import Requirement

    from amt_core.lock import canonical, read_lock

    pins = read_lock()
    project = _pyproject()["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        req = Requirement(text)
        name = canonical(req.name)
        if name == "torch":
            assert "torch" not in pins  # the Makefile installs torch (CPU or CUDA build) outside the lock
            continue
        assert name in pins, f"{name} is not in the lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {req}"
    lock_text = (ROOT / "amt_core" / "lock" / "linux-cpu-py311.txt").read_text()
    hashed = re.findall(r"^[A-Za-z0-9][^\s=]*==\S+ \\\n\s+--hash=sha256:[0-9a-f]{64}", lock_text, re.M)
    assert len(hashed) == len(pins), "every pin carries a hash (pip install --require-hashes)"
    assert not [n for n in pins if n.startswith(("nvidia-", "cuda-")) or n == "triton"], (
        "a CUDA package in the lock"
    )


def test_environment_yml_is_the_lock():
    from amt_core.lock import environment_yml, read_lock

    assert (ROOT / "environment.yml").read_text() == environment_yml(read_lock()), "run `make lock`"


def test_torch_pin_is_the_cpu_wheel_on_cpu_only_linux():
    from amt_core.lock import TORCH_PIN

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_LOCK := (\S+)$", makefile, re.M).group(1) == TORCH_PIN
    assert re.search(r"^TORCH_SPEC \?= torch==2\.13\.0$", makefile, re.M)
    assert f"torch=={TORCH_PIN}" in (ROOT / "environment.yml").read_text()
    # make install takes everything but torch from the lock, hash-checked (uv pip install)
    assert re.search(r"pip install -q --require-hashes --no-deps -r \$\(LOCK\)", makefile)


def test_lock_status_reports_mismatches():
    from amt_core.lock import lock_status, read_lock

    pins = read_lock()
    status = lock_status(installed=dict(pins))
    assert status["matches"] and status["mismatches"] == [] and len(status["sha256"]) == 64
    off = dict(pins, numpy="0.1")
    del off["monai"]
    status = lock_status(installed=off)
    assert not status["matches"]
    assert status["mismatches"] == [f"monai: missing != {pins['monai']}", f"numpy: 0.1 != {pins['numpy']}"]


@pytest.mark.skipif(
    os.environ.get("AMT_LOCK", "none") == "none",
    reason="not installed from the lock (make test sets AMT_LOCK)",
)
def test_make_test_runs_on_the_locked_set():
    from amt_core.lock import lock_status

    status = lock_status()
    assert status["file"] == Path(os.environ["AMT_LOCK"]).name
    assert status["matches"], status["mismatches"]


def test_provenance_records_the_lock(tmp_path):
    import json

    from amt_core.lock import lock_digest
    from amt_core.provenance import write_provenance

    record = json.loads(write_provenance(tmp_path, {"seed": 0}).read_text())
    assert record["environment_lock"]["sha256"] == lock_digest()
    assert isinstance(record["environment_lock"]["matches"], bool)


def _tree(top: Path) -> Path:
    """A tiny package: code, a cache, the notebooks and presets of a wheel, a bundled data file."""
    files = {
        "__init__.py": "__version__ = '0'\n",
        "model/train.py": "LR = 1e-3\n",
        "model/__pycache__/train.cpython-311.pyc": "compiled",
        "notebooks/01_cohort.py": "# %% notebook\n",
        "presets/smoke.yaml": "n_cases: 14\n",
        "synth/chest_backgrounds/ct.nii.gz": "a chest CT",
    }
    for rel, text in files.items():
        (top / "amt_core" / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / "amt_core" / rel).write_text(text)
    return top / "amt_core"


def test_code_fingerprint_follows_the_code_not_its_folder(tmp_path):
    """The same sources in two places give one fingerprint; one changed, added or renamed source another;
    caches, a wheel's notebooks and presets (keyed by each step itself) and data files change nothing."""
    from amt_core.provenance import PACKAGE_DIR, code_files, code_fingerprint

    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "somewhere" / "else")
    assert [f.relative_to(a).as_posix() for f in code_files(a)] == ["__init__.py", "model/train.py"]
    first = code_fingerprint(a)
    assert code_fingerprint(b) == first and len(first) == 64
    for rel in ("model/__pycache__/train.cpython-311.pyc", "notebooks/01_cohort.py", "presets/smoke.yaml",
                "synth/chest_backgrounds/ct.nii.gz", "model/.ipynb_checkpoints/train-checkpoint.py"):  # fmt: skip
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_text("changed")
    assert code_fingerprint(b) == first
    # a checkout with CRLF line endings (git's autocrlf on Windows) holds the same code
    for f in code_files(b):
        f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    assert code_fingerprint(b) == first
    (b / "model" / "train.py").write_text("LR = 1e-4\n")
    assert code_fingerprint(b) != first
    (b / "model" / "train.py").write_text("LR = 1e-3\n")
    (b / "model" / "train.py").rename(b / "model" / "fit.py")
    assert code_fingerprint(b) != first
    (b / "model" / "fit.py").rename(b / "model" / "train.py")
    (b / "model" / "losses.py").write_text("")
    assert code_fingerprint(b) != first
    # the package itself: its modules are in, and a copy elsewhere has its fingerprint
    assert PACKAGE_DIR / "model" / "train.py" in code_files()
    copy = tmp_path / "copy" / "amt_core"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_fingerprint(copy) == code_fingerprint()


def test_result_versions_are_the_libraries_that_compute():
    from amt_core.provenance import PACKAGES, RESULT_PACKAGES, result_versions

    versions = result_versions()
    assert set(RESULT_PACKAGES) <= set(PACKAGES) and list(versions) == ["python", *RESULT_PACKAGES]
    assert {"torch", "monai", "numpy", "scipy", "statsmodels", "nibabel"} <= set(versions)
    assert "matplotlib" not in versions and versions["python"] == "{}.{}".format(*sys.version_info[:2])


def test_import_is_silent_and_does_not_import_torch():
    code = (
        "import sys, amt_core, amt_core.registry, amt_core.cli; amt_core.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'monai', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == ""
    assert out.stdout.strip() == "[]"


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make reproduce" in readme
    assert "make test" in ci
    # the README opens with the three commands: the preview first, then the faithful demo, then the tests
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == [
        "make quick",
        "make reproduce",
        "make test",
    ]


def test_cli_lists_every_area_command():
    out = subprocess.run([sys.executable, "-m", "amt_core.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("cohort", "validate", "evaluate", "train", "predict", "run", "figures", "lab"):
        assert command in out.stdout, f"amt {command} is missing from `amt --help`"
    # the description is written for users: no fragment of the module's docstring for developers
    assert "chest CT" in out.stdout and "Thin:" not in out.stdout, out.stdout[:400]


def test_code_passes_ruff():
    ruff = Path(sys.executable).with_name("ruff")
    out = subprocess.run(
        [str(ruff), "check", "amt_core", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-3000:]
