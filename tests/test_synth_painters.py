"""The anatomy is drawn by one painter per structure; splitting ``draw_anatomy`` into them changed no byte.

Set ``AMT_BASELINE`` to a checkout of the code before the split (``git worktree add /tmp/anatomy-base
<commit>``) to compare generated cases with it; without it the comparison is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.skipif(
    not os.environ.get("AMT_BASELINE"), reason="set AMT_BASELINE to a checkout before the split"
)
def test_generated_cases_are_byte_identical_to_the_baseline():
    here = Path(__file__).resolve().parents[1]
    baseline = Path(os.environ["AMT_BASELINE"]).resolve()
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
