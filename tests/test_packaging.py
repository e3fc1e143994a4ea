"""The install story: environment.yml matches pyproject, the package imports silently and lightly,
and the set-up never asks for a CUDA build of torch on CPU-only Linux."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

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
    assert env_names == wanted, f"only in environment.yml: {env_names - wanted}; only in pyproject: {wanted - env_names}"


def test_torch_pin_is_the_cpu_wheel_on_cpu_only_linux():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH_SPEC \?= torch==2\.13\.0$", makefile, re.M)
    env = (ROOT / "environment.yml").read_text()
    assert "torch==2.13.0" in env


def test_import_is_silent_and_does_not_import_torch():
    code = "import sys, amt_core, amt_core.registry, amt_core.cli; amt_core.cli.build_parser(); " \
           "print(sorted(m for m in ('torch', 'monai', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == ""
    assert out.stdout.strip() == "[]"


def test_ci_calls_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make reproduce" in readme
    assert "make test" in ci
    # the README opens with exactly the two commands
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert [line.strip() for line in first_block] == ["make reproduce", "make test"]


def test_cli_lists_every_area_command():
    out = subprocess.run([sys.executable, "-m", "amt_core.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("cohort", "validate", "evaluate", "train", "predict", "run", "figures"):
        assert command in out.stdout, f"amt {command} is missing from `amt --help`"


def test_code_passes_ruff():
    ruff = Path(sys.executable).with_name("ruff")
    out = subprocess.run([str(ruff), "check", "amt_core", "tests", "benchmarks"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
