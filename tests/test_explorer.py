"""The ipywidgets case browser, driven through its callbacks as JupyterLab would."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def run_dir(tiny_cohort, tmp_path):
    """A run folder over the six-case tiny cohort: predictions and evaluation tables for tune and test.
    (The tiny images are about -500 HU noise, so the tests look through the lung window.)"""
    from amt_core.data.volume import write_volume
    from amt_core.layout import RunLayout

    layout = RunLayout.of(tmp_path / "run", str(tiny_cohort / "cases.csv"))
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    masks = {
        "case_004": (slice(4, 8), slice(3, 7), slice(2, 6)),  # perfect
        "case_005": (slice(5, 9), slice(3, 7), slice(3, 7)),  # shifted: a partial overlap
        "case_006": None,
    }  # missed
    split = {"case_004": "tune", "case_005": "test", "case_006": "test"}
    for case, box in masks.items():
        pred = np.zeros((12, 10, 8), np.uint8)
        if box is not None:
            pred[box] = 1
        write_volume(pred, affine, layout.predictions(split[case]) / f"{case}.nii.gz")
    per_case = pd.DataFrame(
        {
            "case_id": list(masks),
            "institution_id": ["INST-B", "INST-C", "INST-D"],
            "dice": [1.0, 0.42, 0.0],
            "iou": [1.0, 0.27, 0.0],
        }
    )
    cands = pd.DataFrame(
        {
            "case_id": ["case_005"],
            "candidate_id": [1],
            "confidence": [0.97],
            "best_iou": [0.27],
            "status": ["fp"],
            "volume_ml": [0.1],
            "x0": [5],
            "x1": [9],
            "y0": [3],
            "y1": [7],
            "z0": [3],
            "z1": [7],
        }
    )
    for s in ("tune", "test"):
        ev = layout.evaluation(s)
        ev.mkdir(parents=True)
        per_case[per_case["case_id"].map(split) == s].to_csv(ev / "per_case.csv", index=False)
        cands[cands["case_id"].map(split) == s].to_csv(ev / "candidates.csv", index=False)
    return layout


def test_browser_opens_on_the_requested_split_and_case(run_dir):
    from amt_core.explore.widgets import CaseBrowser

    b = CaseBrowser.from_run(run_dir.root, run_dir.cohort_csv, split="test", case="case_005", window="lung")
    assert b.split.value == "test" and b.case.value == "case_005"
    assert [v for _, v in b.case.options] == ["case_005", "case_006"]
    assert "Dice 0.42" in b.case.options[0][0]
    assert bytes(b.images["axial"].value).startswith(b"\x89PNG")
    assert "case_005" in b.info.value and "0.420" in b.info.value
    assert "0.970" in b.candidate_table.value  # the candidate's confidence is listed
    assert "0.270" in b.candidate_table.value  # and its IoU


def test_changing_case_and_slice_updates_the_image(run_dir):
    from amt_core.explore.widgets import CaseBrowser

    b = CaseBrowser.from_run(run_dir.root, run_dir.cohort_csv, split="test", case="case_005", window="lung")
    first = b.render("axial").copy()
    png = bytes(b.images["axial"].value)
    b.case.value = "case_006"  # the dropdown callback loads the other case
    assert b.info.value.count("case_006") == 1
    assert not np.array_equal(b.render("axial"), first)
    assert bytes(b.images["axial"].value) != png

    assert b.sliders["axial"].max == 7  # z has 8 slices
    before = bytes(b.images["axial"].value)
    b.sliders["axial"].value = 6
    assert b.slices["axial"] == 6
    assert bytes(b.images["axial"].value) != before
    for view in ("coronal", "sagittal"):
        old = b.render(view).copy()
        b.sliders[view].value = 1
        assert not np.array_equal(b.render(view), old)


def test_overlays_and_window_presets(run_dir):
    from amt_core.explore.widgets import CaseBrowser
    from amt_core.plots.style import ROLE

    b = CaseBrowser.from_run(run_dir.root, run_dir.cohort_csv, split="test", case="case_005", window="lung")
    green = np.array([int(ROLE["reference"][i : i + 2], 16) / 255 for i in (1, 3, 5)])
    img = b.render("axial")
    assert np.isclose(img, green, atol=1e-3).all(axis=-1).any(), "reference outline drawn"
    b.ref_box.value = False
    assert not np.isclose(b.render("axial"), green, atol=1e-3).all(axis=-1).any()
    lung = b.render("axial").copy()
    b.window_buttons.value = "bone"
    assert b.window == "bone" and not np.array_equal(b.render("axial"), lung)
    with pytest.raises(ValueError, match="unknown window"):
        b.set_window("brain")


def test_coronal_view_has_square_pixels(run_dir):
    from amt_core.explore.widgets import CaseBrowser

    b = CaseBrowser.from_run(run_dir.root, run_dir.cohort_csv, split="test", case="case_005", window="lung")
    # 12 x 10 x 8 voxels of 0.8 x 0.8 x 2.5 mm: coronal is 8 slices * 2.5 / 0.8 = 25 rows by 12 columns
    assert b.render("coronal").shape == (25, 12, 3)
    assert b.render("axial").shape == (10, 12, 3)


def test_jump_to_worst_walks_from_the_lowest_dice(run_dir):
    from amt_core.explore.widgets import CaseBrowser

    b = CaseBrowser.from_run(run_dir.root, run_dir.cohort_csv, split="test")
    assert b.worst_cases() == ["case_006", "case_005"]
    assert b.jump_to_worst() == "case_006" and b.case.value == "case_006"
    assert b.jump_to_worst() == "case_005"
    b.worst.click()  # the button wraps around
    assert b.case.value == "case_006"


def test_split_and_institution_filters(run_dir):
    from amt_core.explore.widgets import ALL, CaseBrowser

    b = CaseBrowser.from_run(run_dir.root, run_dir.cohort_csv, split="test")
    assert list(b.institution.options) == [ALL, "INST-C", "INST-D"]
    b.institution.value = "INST-D"
    assert [v for _, v in b.case.options] == ["case_006"]
    b.split.value = "tune"
    assert b.institution.value == ALL and [v for _, v in b.case.options] == ["case_004"]
    b.select_case("case_005")  # switches split back
    assert b.split.value == "test" and b.case.value == "case_005"
    with pytest.raises(KeyError, match="nope"):
        b.select_case("nope")


def test_go_to_candidate_centres_the_views(run_dir):
    from amt_core.explore.widgets import CaseBrowser

    b = CaseBrowser.from_run(run_dir.root, run_dir.cohort_csv, split="test", case="case_005", window="lung")
    assert (
        len(b.go_to.options) == 2
        and "conf 0.97" in b.go_to.options[1][0]
        and "IoU 0.27" in b.go_to.options[1][0]
    )
    b.sliders["axial"].value = 0
    b.go_to.value = 0  # the first candidate: box x 5-8, y 3-6, z 3-6
    assert b.slices == {"sagittal": 6, "coronal": 4, "axial": 4}
    b.case.value = "case_006"  # a case without candidates resets the list
    assert b.go_to.options == (("—", None),)


def test_from_run_finds_the_cohort_the_run_was_made_with(run_dir):
    """A run of a cohort of one's own (``cohort_csv`` in the params: imported or hybrid) keeps it outside the
    run folder: ``from_run(RUN)`` alone opens it, as ``amt figures RUN`` does, from the run's provenance."""
    from amt_core.explore.widgets import CaseBrowser
    from amt_core.provenance import write_provenance

    write_provenance(run_dir.root, {"params": {"cohort_csv": str(run_dir.cases_csv)}})
    b = CaseBrowser.from_run(run_dir.root, split="test", case="case_005", window="lung")
    assert b.case.value == "case_005" and "case_005" in b.info.value


def test_a_value_the_case_table_leaves_empty_is_shown_as_not_stated(run_dir):
    """A hybrid cohort leaves sex and vendor empty when the background does not state them: the case's
    line says 'not stated' (as Table 1 does), never 'nan'."""
    from amt_core.explore.widgets import CaseBrowser

    cases = pd.read_csv(run_dir.cases_csv, dtype=str, keep_default_na=False)
    cases.loc[cases["case_id"] == "case_005", ["sex", "vendor"]] = ""
    cases.to_csv(run_dir.cases_csv, index=False)
    b = CaseBrowser.from_run(run_dir.root, run_dir.cohort_csv, split="test", case="case_005", window="lung")
    assert "sex: not stated" in b.info.value and "vendor: not stated" in b.info.value
    assert "nan" not in b.info.value
