"""The failure table, its per-subgroup counts and the gallery, on hand-made evaluation rows whose answer is
written beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amt_core.plots.failures import (
    failure_counts,
    failure_markdown_frame,
    failure_table,
    gallery_rows,
    plot_failures,
)

BOX = {"x0": 14, "x1": 26, "y0": 14, "y1": 26, "z0": 10, "z1": 14}  # axial slices 10-13, middle 11


def _rows():
    per_case = pd.DataFrame(
        {
            "case_id": ["c1", "c2", "c3", "c4"],
            "institution_id": ["I1", "I1", "I2", "I3"],
            "dice": [0.9, 0.1, 0.5, 0.0],
            "ref_volume_ml": [10.0, 25.0, 7.0, 20.0],
        }
    )
    lesions = pd.DataFrame(
        [  # c2's first and c4's only lesion are missed
            {"case_id": "c1", "lesion_id": 1, "volume_ml": 10.0, "hit": True, "best_iou": 0.8},
            {"case_id": "c2", "lesion_id": 1, "volume_ml": 5.0, "hit": False, "best_iou": 0.1},
            {"case_id": "c2", "lesion_id": 2, "volume_ml": 20.0, "hit": True, "best_iou": 0.6},
            {"case_id": "c3", "lesion_id": 1, "volume_ml": 7.0, "hit": True, "best_iou": 0.5},
            {"case_id": "c4", "lesion_id": 1, "volume_ml": 20.0, "hit": False, "best_iou": 0.0},
        ]
    ).assign(**BOX)
    candidates = pd.DataFrame(
        [  # false positives of 1, 8, 3 and 0.5 ml; 'tp' and 'extra' are not failures
            {
                "case_id": "c1",
                "candidate_id": 1,
                "volume_ml": 9.0,
                "status": "tp",
                "confidence": 0.9,
                "best_iou": 0.8,
            },
            {
                "case_id": "c1",
                "candidate_id": 2,
                "volume_ml": 1.0,
                "status": "fp",
                "confidence": 0.6,
                "best_iou": 0.0,
            },
            {
                "case_id": "c2",
                "candidate_id": 1,
                "volume_ml": 8.0,
                "status": "fp",
                "confidence": 0.7,
                "best_iou": 0.1,
            },
            {
                "case_id": "c3",
                "candidate_id": 1,
                "volume_ml": 3.0,
                "status": "fp",
                "confidence": 0.5,
                "best_iou": 0.0,
            },
            {
                "case_id": "c3",
                "candidate_id": 2,
                "volume_ml": 30.0,
                "status": "extra",
                "confidence": 0.9,
                "best_iou": 0.5,
            },
            {
                "case_id": "c4",
                "candidate_id": 1,
                "volume_ml": 0.5,
                "status": "fp",
                "confidence": 0.8,
                "best_iou": 0.0,
            },
        ]
    ).assign(**BOX)
    cases = pd.DataFrame(
        {
            "case_id": ["c1", "c2", "c3", "c4"],
            "institution_id": ["I1", "I1", "I2", "I3"],
            "vendor": ["GE", "GE", "Siemens", "Siemens"],
            "contrast": ["venous", "none", "none", "venous"],
            "slice_thickness_mm": [1.0, 2.5, 5.0, 1.0],
            "histology": ["thymoma_A"] * 4,
            "sex": ["M", "F", "F", "M"],
        }
    )
    return per_case, lesions, candidates, cases


def test_failure_table_lists_worst_scans_every_miss_and_the_largest_false_positives():
    table = failure_table(*_rows(), n_worst=2, n_fp=2)
    got = list(zip(table["kind"], table["case_id"], table["item"], strict=True))
    assert got == [
        ("worst_scan", "c4", 0),
        ("worst_scan", "c2", 0),  # Dice 0.0, 0.1
        ("missed_lesion", "c4", 1),
        ("missed_lesion", "c2", 1),  # 20 ml, 5 ml
        ("false_positive", "c2", 1),
        ("false_positive", "c3", 1),
    ]  # 8 ml, 3 ml
    assert list(table["size_ml"]) == [20.0, 25.0, 20.0, 5.0, 8.0, 3.0]
    assert set(table["slices"]) == {"10–13"} and set(table["slice"]) == {11}
    fp = table[table["kind"] == "false_positive"].iloc[0]
    assert (fp["vendor"], fp["contrast"], fp["slice_thickness_mm"], fp["institution_id"]) == (
        "GE",
        "none",
        2.5,
        "I1",
    )
    assert fp["confidence"] == 0.7 and fp["dice"] == 0.1
    shown = failure_markdown_frame(table)
    assert list(shown["#"]) == [1, 2, 3, 4, 5, 6] and list(shown["Item"])[1:4] == [
        "–",
        "lesion 1",
        "lesion 1",
    ]


def test_failures_counted_per_subgroup():
    counts = failure_counts(*_rows(), n_worst=2, subgroups=("vendor", "contrast"))
    vendor = counts[counts["subgroup"] == "vendor"].set_index("level")
    assert vendor.loc[
        "GE", ["scans", "lesions", "missed_lesions", "false_positives", "worst_2_scans"]
    ].tolist() == [2, 3, 1, 2, 1]
    assert vendor.loc[
        "Siemens", ["scans", "lesions", "missed_lesions", "false_positives", "worst_2_scans"]
    ].tolist() == [2, 2, 1, 2, 1]
    assert vendor.loc["GE", "missed_share"] == pytest.approx(1 / 3) and vendor.loc["GE", "fp_per_scan"] == 1.0
    contrast = counts[counts["subgroup"] == "contrast"].set_index("level")
    assert contrast.loc["venous", "missed_lesions"] == 1 and contrast.loc["none", "false_positives"] == 2
    assert counts.groupby("subgroup")["scans"].sum().eq(4).all()  # every scan in one level of each subgroup


def _gallery_inputs(tmp_path):
    """The failure table of :func:`_rows` (2 worst scans, 2 misses, 2 false positives) and its case table,
    with volumes on disk: a 12-voxel cube of tumour on axial slices 10-13, never predicted."""
    from amt_core.data.volume import write_volume

    shape, affine = (40, 40, 24), np.diag([1.0, 1.0, 2.0, 1.0])
    ref = np.zeros(shape, np.uint8)
    ref[14:26, 14:26, 10:14] = 1
    (tmp_path / "pred").mkdir()
    rows = []
    for cid in ("c1", "c2", "c3", "c4"):
        write_volume(
            np.random.default_rng(0).normal(40, 10, shape).astype(np.float32),
            affine,
            tmp_path / f"{cid}_img.nii.gz",
        )
        write_volume(ref, affine, tmp_path / f"{cid}_ref.nii.gz")
        write_volume(np.zeros(shape, np.uint8), affine, tmp_path / "pred" / f"{cid}.nii.gz")  # all missed
        rows.append(
            {
                "case_id": cid,
                "image": str(tmp_path / f"{cid}_img.nii.gz"),
                "label": str(tmp_path / f"{cid}_ref.nii.gz"),
            }
        )
    per_case, lesions, candidates, cases = _rows()
    cases = cases.merge(pd.DataFrame(rows), on="case_id")
    return failure_table(per_case, lesions, candidates, cases, n_worst=2, n_fp=2), cases


def test_gallery_shows_each_failure_on_its_slice(tmp_path):
    table, cases = _gallery_inputs(tmp_path)
    fig = plot_failures(table, cases, tmp_path / "pred", max_panels=5, ncols=3, margin_mm=4.0)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 5  # 6 failures, 5 panels shown, the sixth cell hidden
    assert visible[0].get_title() == "#1 worst scan: c4\n20.0 ml, slice 11, Dice 0.00"
    assert visible[2].get_title().startswith("#3 missed lesion: c4")
    assert visible[4].texts[0].get_text() == "I1 · GE · none · 2.5 mm"
    # the crop is the lesion's 12-voxel box plus a 4 mm (4-voxel) margin on each side
    assert visible[2].images[0].get_array().shape == (20, 20)


def test_gallery_takes_a_share_of_every_kind_and_says_how_many_it_shows(tmp_path):
    table, cases = _gallery_inputs(tmp_path)  # rows 1-2 worst scans, 3-4 misses, 5-6 false positives
    fig = plot_failures(table, cases, tmp_path / "pred", max_panels=3, ncols=3, margin_mm=4.0)
    titles = [ax.get_title().split(":")[0] for ax in fig.axes if ax.get_visible()]
    # one of each kind, numbered as in the failures table, not the table's first three rows
    assert titles == ["#1 worst scan", "#3 missed lesion", "#5 false positive"]
    assert fig.get_suptitle() == (
        "3 of 6 failures shown (1 of 2 worst scans, 1 of 2 missed lesions, 1 of 2 false positives); "
        "# as in the failures table"
    )


def test_gallery_budget_is_dealt_in_turn_until_a_kind_runs_out():
    kinds = ["worst_scan"] * 5 + ["missed_lesion"] * 10 + ["false_positive"] * 3
    rows = gallery_rows(pd.DataFrame({"kind": kinds}), max_panels=12)
    # rounds of one per kind: the 3 false positives run out after the third, then worst and missed share
    assert rows == [0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17]
    assert gallery_rows(pd.DataFrame({"kind": kinds}), max_panels=40) == list(range(18))  # room for all
    only_missed = pd.DataFrame({"kind": ["missed_lesion"] * 4})  # a kind absent takes no share
    assert gallery_rows(only_missed, max_panels=3) == [0, 1, 2]
