"""`amt evaluate` end to end in a subprocess, on a tiny cohort and predictions folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _predictions(cohort, out, with_prob: bool):
    from amt_core.data.volume import write_volume

    out.mkdir()
    cases = pd.read_csv(cohort / "cases.csv", dtype=str)
    for case_id, split in zip(cases["case_id"], cases["split"], strict=True):
        if split != "test":
            continue
        mask = np.zeros((12, 10, 8), np.uint8)
        mask[4:8, 3:6, 2:6] = 1  # 3/4 of the reference box [4:8, 3:7, 2:6]
        mask[0:2, 0:2, 0:2] = 1  # a small false positive
        write_volume(mask, AFFINE, out / f"{case_id}.nii.gz")
        if with_prob:
            prob = mask.astype(np.float32) * np.float32(0.9)
            prob[0:2, 0:2, 0:2] = 0.6
            write_volume(prob, AFFINE, out / f"{case_id}_prob.nii.gz")


def _amt(*args):
    return subprocess.run(
        [sys.executable, "-m", "amt_core.cli", "evaluate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_writes_the_results_folder(tiny_cohort, tmp_path):
    preds, out = tmp_path / "preds", tmp_path / "eval"
    _predictions(tiny_cohort, preds, with_prob=True)
    run = _amt(
        "--cohort",
        tiny_cohort / "cases.csv",
        "--predictions",
        preds,
        "--out",
        out,
        "--n-bootstrap",
        200,
        "--seed",
        3,
        "--no-progress",
    )
    assert run.returncode == 0, run.stderr
    assert "2 scans: Dice 0.800, IoU 0.667, precision 0.857, recall 0.750" in run.stdout
    per_case = pd.read_csv(out / "per_case.csv", dtype={"case_id": str})
    assert per_case["case_id"].tolist() == ["case_005", "case_006"]
    assert per_case["institution_id"].tolist() == ["INST-C", "INST-D"]
    assert per_case["dice"].tolist() == [2 * 48 / (64 + 56)] * 2
    assert per_case[["tp", "fp", "fn"]].to_numpy().tolist() == [[1, 1, 0]] * 2
    candidates = pd.read_csv(out / "candidates.csv")
    assert sorted(candidates["confidence"].round(6).unique()) == [0.6, 0.9]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["n_bootstrap"] == 200 and summary["config"]["seed"] == 3
    for name in ("lesions.csv", "froc_confidence.csv", "froc_iou.csv", "froc_points.csv", "cis.csv"):
        assert (out / name).is_file()


def test_cli_mask_only_and_cluster_bootstrap(tiny_cohort, tmp_path):
    preds, out = tmp_path / "preds", tmp_path / "eval"
    _predictions(tiny_cohort, preds, with_prob=False)
    run = _amt(
        "--cohort",
        tiny_cohort / "cases.csv",
        "--predictions",
        preds,
        "--out",
        out,
        "--n-bootstrap",
        100,
        "--cluster-bootstrap",
        "--extra-hits",
        "fp",
        "--no-progress",
    )
    assert run.returncode == 0, run.stderr
    assert (pd.read_csv(out / "candidates.csv")["confidence"] == 1.0).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["cluster_bootstrap"] and summary["config"]["extra_hits"] == "fp"


def test_cli_names_what_is_missing(tiny_cohort, tmp_path):
    (tmp_path / "preds").mkdir()
    run = _amt(
        "--cohort", tiny_cohort / "cases.csv", "--predictions", tmp_path / "preds", "--out", tmp_path / "o"
    )
    assert run.returncode == 2
    assert "prediction(s) missing" in run.stderr and "case_005.nii.gz" in run.stderr
    run = _amt(
        "--cohort", tiny_cohort / "cases.csv", "--predictions", tmp_path / "nowhere", "--out", tmp_path / "o"
    )
    assert run.returncode == 2 and "--predictions" in run.stderr


def test_reader_accepts_uint8_probability_maps_and_checks_the_grid(tmp_path):
    import pytest

    from amt_core.data.volume import write_volume
    from amt_core.evaluation.api import _read_case

    label = np.zeros((12, 10, 8), np.uint8)
    label[4:8, 3:7, 2:6] = 1
    write_volume(label, AFFINE, tmp_path / "label.nii.gz")
    write_volume(label, AFFINE, tmp_path / "c1.nii.gz")
    write_volume(label * np.uint8(204), AFFINE, tmp_path / "c1_prob.nii.gz")  # 204/255 = 0.8
    ref, mask, prob, spacing = _read_case(
        str(tmp_path / "label.nii.gz"), tmp_path / "c1.nii.gz", tmp_path / "c1_prob.nii.gz"
    )
    assert prob.dtype == np.float32 and prob.max() == pytest.approx(0.8)
    assert spacing == pytest.approx((0.8, 0.8, 2.5)) and np.array_equal(ref, mask)
    write_volume(label, np.diag([0.8, 0.8, 3.0, 1.0]), tmp_path / "c2.nii.gz")
    with pytest.raises(ValueError, match="not on the grid"):
        _read_case(str(tmp_path / "label.nii.gz"), tmp_path / "c2.nii.gz")
