"""The anatomy is drawn by one painter per structure; splitting ``draw_anatomy`` into them changed no byte.

The baseline is the code before the split: ``AMT_BASELINE`` (a checkout), else commit :data:`BEFORE_SPLIT` taken
from this checkout's git history (``git archive``); a clone without that history skips the comparison.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

#: the last commit before draw_anatomy was split into painters (issue 14)
BEFORE_SPLIT = "e2bddb9"

#: prints the SHA-256 of tiny cases (image, label, affine, tissue masks) rendered by the code on sys.path[0]
SCRIPT = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from amt_core.synth.design import study_design
from amt_core.synth.generate import render_case
import amt_core
assert amt_core.__file__.startswith(sys.argv[1]), amt_core.__file__
design = study_design(n_cases=24, seed=0)
h = hashlib.sha256()
for i in (0, 5, 11):
    details = {}
    image, label, affine = render_case(design.iloc[i].to_dict(), "tiny", seed=0, details=details)
    for a in (image, label, affine, *(details["masks"][k] for k in sorted(details["masks"]))):
        h.update(a.tobytes())
print(h.hexdigest())
"""


def _digest(root: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root)], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _baseline(tmp_path: Path) -> Path:
    if os.environ.get("AMT_BASELINE"):
        return Path(os.environ["AMT_BASELINE"]).resolve()
    here = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None:
        pytest.skip("no git to take the code before the split from (set AMT_BASELINE)")
    archive = tmp_path / "before.tar"
    out = subprocess.run(
        ["git", "-C", str(here), "archive", "-o", str(archive), BEFORE_SPLIT, "amt_core"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:  # e.g. a shallow clone
        pytest.skip(
            f"commit {BEFORE_SPLIT} is not in this clone's history (set AMT_BASELINE): {out.stderr.strip()}"
        )
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "before", filter="data")
    return tmp_path / "before"


def test_generated_cases_are_byte_identical_to_the_baseline(tmp_path):
    here = Path(__file__).resolve().parents[1]
    baseline = _baseline(tmp_path)
    assert (baseline / "amt_core" / "synth" / "anatomy.py").is_file(), f"{baseline}: not an amt checkout"
    assert _digest(here) == _digest(baseline)


def test_draw_anatomy_is_one_painter_per_structure():
    import inspect

    from amt_core.synth import anatomy

    body = inspect.getsource(anatomy.draw_anatomy)
    painters = [n for n in dir(anatomy) if n.startswith("_draw_")]
    assert len(painters) >= 15
    assert all(f"{n}(" in body for n in painters), "a painter draw_anatomy does not call"
    assert len(body.splitlines()) < 40
