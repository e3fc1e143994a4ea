"""The anatomy is drawn by one painter per structure. Issue 15 §2 redrew some of them on purpose (body
outline, muscle, lungs with fissures, lung vessel tree, heart chambers, thymic remnant, spine, ribs,
sternum; arms added), and GENERATOR_VERSION 3 redrew the upper abdomen and the diaphragm (hence the
mediastinal fat, which stops at it) and made the scan reach further into the abdomen and the organs' HU vary
per patient; every other painter must still paint exactly what it painted before: each is run alone on the same patient,
tissue table and random stream by this checkout and by the code before that change, and the canvases compared.

The baseline is ``AMT_BASELINE`` (a checkout), else commit :data:`BEFORE_REDRAW` taken from this checkout's git
history (``git archive``); a clone without that history skips the comparison.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

#: the last commit before issue 15 §2 redrew painters (the split itself, issue 14, was checked against e2bddb9)
BEFORE_REDRAW = "598e6e2"

#: the painters issue 15 §2 left as they were
UNCHANGED = (
    "_draw_table",
    "_draw_scapulae",
    "_draw_great_vessels",
    "_draw_airways",
    "_draw_nodes",
    "_draw_clavicles",
)

#: prints the SHA-256 of each unchanged painter's canvas, run alone, for three patients, by the code on sys.argv[1]
SCRIPT = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import amt_core
from amt_core.synth import anatomy
from amt_core.synth.canvas import Canvas
from amt_core.synth.design import study_design
from amt_core.synth.scanner import scan_grid
assert amt_core.__file__.startswith(sys.argv[1]), amt_core.__file__
design = study_design(n_cases=24, seed=0)
for i in (0, 5, 11):
    row = design.iloc[i]
    rng = np.random.default_rng(np.random.SeedSequence([0, 3, int(row.case_index)]))
    p = anatomy.sample_patient(rng, row.sex, float(row.age), float(row.patient_scale))
    p.extras["abdomen_mm"] = 35.0  # the scan's lower end before GENERATOR_VERSION 3 drew it per patient
    hu = anatomy.tissue_table(row.contrast, float(row.enhancement), float(row.age), np.random.default_rng(i))
    # the table's own values, without the per-patient variation GENERATOR_VERSION 3 added to some of them
    hu.update({k: v[anatomy.PHASE_INDEX[row.contrast]] for k, v in anatomy.TISSUE_HU.items()})
    hu["cortex"] = 800.0  # its range was recalibrated; the painters that use it must still use it alike
    grid = scan_grid("tiny", 420.0, 2.0, p.z_bottom, p.z_top)
    for name in sys.argv[2:]:
        cv = Canvas(grid.shape, grid.spacing, grid.origin)
        painter = getattr(anatomy, name)
        rng = np.random.default_rng(7)
        args = {
            "_draw_table": (cv, p, anatomy._trunk(cv, p)),
            "_draw_abdomen": (cv, p, hu, rng),
            "_draw_great_vessels": (cv, p, hu, rng, None),
            "_draw_airways": (cv, p, hu, rng, None),
            "_draw_nodes": (cv, p, hu, rng, None),
        }.get(name, (cv, p, hu))
        painter(*args)
        print(i, name, hashlib.sha256(cv.hu.tobytes()).hexdigest())
"""


def _digest(root: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root), *UNCHANGED], capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def _baseline(tmp_path: Path) -> Path:
    if os.environ.get("AMT_BASELINE"):
        return Path(os.environ["AMT_BASELINE"]).resolve()
    here = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None:
        pytest.skip("no git to take the code before the redraw from (set AMT_BASELINE)")
    archive = tmp_path / "before.tar"
    out = subprocess.run(
        ["git", "-C", str(here), "archive", "-o", str(archive), BEFORE_REDRAW, "amt_core"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:  # e.g. a shallow clone
        pytest.skip(
            f"commit {BEFORE_REDRAW} is not in this clone's history (set AMT_BASELINE): {out.stderr.strip()}"
        )
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "before", filter="data")
    return tmp_path / "before"


def test_unchanged_painters_paint_what_they_painted_before(tmp_path):
    here = Path(__file__).resolve().parents[1]
    baseline = _baseline(tmp_path)
    assert (baseline / "amt_core" / "synth" / "anatomy.py").is_file(), f"{baseline}: not an amt checkout"
    now, before = _digest(here), _digest(baseline)
    assert len(now) == 3 * len(UNCHANGED)
    assert now == before, sorted(set(now) - set(before))


def test_draw_anatomy_is_one_painter_per_structure():
    import inspect

    from amt_core.synth import anatomy

    body = inspect.getsource(anatomy.draw_anatomy)
    painters = [n for n in dir(anatomy) if n.startswith("_draw_")]
    assert len(painters) >= 15
    assert all(f"{n}(" in body for n in painters), "a painter draw_anatomy does not call"
    assert len(body.splitlines()) < 40
