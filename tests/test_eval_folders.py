"""`amt evaluate --labels DIR --predictions DIR`: folders matched by file name, no case table (nnU-Net style),
optional metadata, missing cases, other naming, and nnU-Net's `{case}.npz` probabilities."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from amt_core.evaluation.config import EvalConfig
from amt_core.evaluation.folders import evaluate_folders

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])
FAST = EvalConfig(n_bootstrap=50)


def _predictions(cohort, out, cases=("case_005", "case_006")):
    """Per case: 48 of the reference's 64 voxels plus an 8-voxel false positive (Dice 96/120 = 0.8)."""
    from amt_core.data.volume import write_volume

    out.mkdir(exist_ok=True)
    for case_id in cases:
        mask = np.zeros((12, 10, 8), np.uint8)
        mask[4:8, 3:6, 2:6] = 1
        mask[0:2, 0:2, 0:2] = 1
        write_volume(mask, AFFINE, out / f"{case_id}.nii.gz")
    return out


def _amt(*args):
    return subprocess.run(
        [sys.executable, "-m", "amt_core.cli", "evaluate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_labels_folder_gives_the_cohort_forms_numbers(tiny_cohort, tmp_path):
    """The same scans scored from the case table and from the two folders plus metadata: identical rows;
    the folder form also writes the sub-group and per-institution tables the metadata allow."""
    preds = _predictions(tiny_cohort, tmp_path / "preds")
    a, b = tmp_path / "by_cohort", tmp_path / "by_folders"
    common = ("--predictions", preds, "--n-bootstrap", 100, "--seed", 1, "--no-progress")
    run = _amt("--cohort", tiny_cohort / "cases.csv", "--out", a, *common)
    assert run.returncode == 0, run.stderr
    run = _amt(
        "--labels", tiny_cohort / "labelsTs", "--metadata", tiny_cohort / "cases.csv", "--out", b, *common
    )
    assert run.returncode == 0, run.stderr
    assert "2 scans: Dice 0.800, IoU 0.667, precision 0.857, recall 0.750" in run.stdout
    assert "metadata:" not in run.stdout  # nothing was missing
    for name in (
        "per_case.csv",
        "lesions.csv",
        "candidates.csv",
        "froc_iou.csv",
        "froc_confidence.csv",
        "cis.csv",
    ):
        pd.testing.assert_frame_equal(pd.read_csv(a / name), pd.read_csv(b / name), obj=name)
    summary = json.loads((b / "summary.json").read_text())
    assert summary["metadata"]["institutions"] is True and summary["metadata"]["note"] == "complete"
    assert summary["missing_predictions"] == [] and summary["n_institutions"] == 2
    subgroups = pd.read_csv(b / "subgroups.csv")
    assert set(subgroups["subgroup"]) == {
        "sex",
        "age_band",
        "histology",
        "tumour_size_band",
        "contrast",
        "slice_thickness_band",
        "vendor",
    }
    assert "p_adjusted" in subgroups.columns
    assert set(pd.read_csv(b / "institutions.csv")["institution_id"]) == {"pooled (<3 scans)"}


def test_cli_without_metadata_says_there_is_no_institution(tiny_cohort, tmp_path):
    preds = _predictions(tiny_cohort, tmp_path / "preds")
    out = tmp_path / "eval"
    run = _amt(
        "--labels",
        tiny_cohort / "labelsTs",
        "--predictions",
        preds,
        "--out",
        out,
        "--n-bootstrap",
        50,
        "--no-progress",
    )
    assert run.returncode == 0, run.stderr
    assert (
        "metadata: no institution_id: no per-institution table and no institution-cluster bootstrap"
        in run.stdout
    )
    assert (
        "intervals (scan bootstrap): 2 scans: a bootstrap of fewer than 10 scans under-covers" in run.stdout
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_institutions"] == 0 and summary["bootstrap"]["unit"] == "scan"
    assert "no institution-cluster bootstrap" in summary["metadata"]["note"]
    assert summary["metadata"]["subgroups"] == [] and summary["extra_tables"] == []
    assert pd.read_csv(out / "per_case.csv")["institution_id"].isna().all()
    # asking for the cluster bootstrap without institutions: one line, nothing written
    run = _amt(
        "--labels",
        tiny_cohort / "labelsTs",
        "--predictions",
        preds,
        "--out",
        tmp_path / "o2",
        "--cluster-bootstrap",
        "--no-progress",
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "needs institutions" in run.stderr and not (tmp_path / "o2").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--cohort", "C.csv", "--metadata", "m.csv"], "--metadata goes with --labels"),
    (["--cohort", "C.csv", "--allow-missing"], "--allow-missing goes with --labels"),
    (["--labels", "L", "--split", "test"], "--split goes with --cohort"),
])  # fmt: skip
def test_cli_flags_of_the_other_form_are_refused(tmp_path, capsys, args, message):
    from amt_core.cli import main

    (tmp_path / "P").mkdir()
    code = main(["evaluate", *args, "--predictions", str(tmp_path / "P"), "--out", str(tmp_path / "out")])
    assert code == 2 and message in capsys.readouterr().err


def test_cli_needs_exactly_one_reference(tmp_path, capsys):
    from amt_core.cli import main

    for both in ([], ["--cohort", "C.csv", "--labels", "L"]):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", *both, "--predictions", "P", "--out", str(tmp_path / "o")])
        assert exc.value.code == 2
    assert "--cohort" in capsys.readouterr().err


def test_missing_and_extra_predictions(tiny_cohort, tmp_path):
    labels = tiny_cohort / "labelsTs"
    preds = _predictions(tiny_cohort, tmp_path / "preds", cases=("case_005",))
    with pytest.raises(
        ValueError, match=r"1 case\(s\) of .* have no prediction: case_006; .*--allow-missing"
    ):
        evaluate_folders(labels, preds, config=FAST, progress=False)
    result = evaluate_folders(labels, preds, allow_missing=True, config=FAST, progress=False)
    row = result.per_case.set_index("case_id").loc["case_006"]
    assert (row["dice"], row["pred_voxels"], row["tp"], row["fn"]) == (0.0, 0, 0, 1)
    assert result.summary["missing_predictions"] == ["case_006"]
    _predictions(tiny_cohort, preds, cases=("case_006", "case_001"))  # case_001 is a training case
    with pytest.raises(ValueError, match=r"1 prediction\(s\) have no label .*: case_001"):
        evaluate_folders(labels, preds, allow_missing=True, config=FAST, progress=False)


def test_other_naming_with_patterns(tiny_cohort, tmp_path):
    labels, preds = tmp_path / "gt", tmp_path / "preds"
    labels.mkdir()
    for case in ("case_005", "case_006"):
        shutil.copy(tiny_cohort / "labelsTs" / f"{case}.nii.gz", labels / f"{case}_gt.nii.gz")
    _predictions(tiny_cohort, preds)
    for f in list(preds.iterdir()):
        f.rename(preds / f"seg_{f.name}")
    (preds / "notes.txt").write_text("ignored: does not match the pattern")
    result = evaluate_folders(
        labels,
        preds,
        pattern="seg_{case}.nii.gz",
        label_pattern="{case}_gt.nii.gz",
        config=FAST,
        progress=False,
    )
    assert result.per_case["case_id"].tolist() == ["case_005", "case_006"]
    assert result.per_case["dice"].tolist() == pytest.approx([0.8, 0.8])
    with pytest.raises(ValueError, match=r"2 prediction\(s\) have no label .*: seg_case_005, seg_case_006"):
        evaluate_folders(labels, preds, config=FAST, progress=False)  # the default pattern: names differ
    with pytest.raises(FileNotFoundError, match=r"gt has no file named \{case\}\.nrrd \(set --pattern\)"):
        evaluate_folders(labels, preds, pattern="{case}.nrrd", config=FAST, progress=False)
    with pytest.raises(ValueError, match="must hold '{case}' once"):
        evaluate_folders(labels, preds, pattern="seg.nii.gz", config=FAST, progress=False)


def test_metadata_must_cover_every_case(tiny_cohort, tmp_path):
    preds = _predictions(tiny_cohort, tmp_path / "preds")
    meta = pd.read_csv(tiny_cohort / "cases.csv")
    meta[meta["case_id"] != "case_006"].to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(ValueError, match=r"meta.csv: 1 evaluated case\(s\) have no row: case_006"):
        evaluate_folders(
            tiny_cohort / "labelsTs", preds, metadata=tmp_path / "meta.csv", config=FAST, progress=False
        )
    meta[["case_id", "sex"]].to_csv(tmp_path / "sex_only.csv", index=False)  # sub-groups without institutions
    result = evaluate_folders(
        tiny_cohort / "labelsTs", preds, metadata=tmp_path / "sex_only.csv", config=FAST, progress=False
    )
    assert (
        result.summary["metadata"]["subgroups"] == ["sex"] and not result.summary["metadata"]["institutions"]
    )
    assert set(result.tables) == {"subgroups"} and set(result.tables["subgroups"]["level"]) == {"F", "M"}


# --- nnU-Net's {case}.npz -----------------------------------------------------------------------------------
#: a grid with permuted and flipped axes (file axis 0 runs along -y, axis 1 along -x, axis 2 along +z), so
#: that reading the (z, y, x) array in any other order than nnU-Net's puts the probabilities elsewhere
ODD_AFFINE = np.array([[0.0, -0.9, 0.0, 10.0], [-0.7, 0.0, 0.0, 5.0], [0.0, 0.0, 2.0, -3.0], [0, 0, 0, 1]])


def _nnunet_case(folder, labels, case="c1", arrange=lambda xyz: xyz.transpose(2, 1, 0)):
    """A label and an nnU-Net-style prediction of one scan of shape (x, y, z) = (14, 11, 9) on ODD_AFFINE:
    the mask, and ``{case}.npz`` whose class-1 map is built the way nnU-Net's SimpleITK reader orders
    arrays (``sitk.GetArrayFromImage`` of the label: (z, y, x)): 0.9 on the lesion, 0.7 on a separate
    false positive, 0.1 elsewhere. ``arrange``: how the map in the file's voxel order (x, y, z) becomes the
    saved array (nnU-Net's SimpleITK reader: axes reversed)."""
    import SimpleITK as sitk

    label = np.zeros((14, 11, 9), np.uint8)
    label[2:6, 1:4, 1:3] = 1  # asymmetric: off-centre on every axis
    nib.save(nib.Nifti1Image(label, ODD_AFFINE), str(labels / f"{case}.nii.gz"))
    shutil.copy(labels / f"{case}.nii.gz", folder / f"{case}.nii.gz")  # the mask: the lesion only
    sitk_label = sitk.GetArrayFromImage(sitk.ReadImage(str(labels / f"{case}.nii.gz")))
    assert sitk_label.shape == (9, 11, 14)  # SimpleITK: (z, y, x)
    assert np.array_equal(sitk_label, label.transpose(2, 1, 0))  # nnU-Net's order is the file's reversed
    tumour = np.full(label.shape, 0.1, np.float32)
    tumour[label > 0] = 0.9
    tumour[10:13, 7:10, 6:8] = 0.45  # below the mask's 0.5, so the mask stays the argmax ...
    tumour[10:12, 7:9, 6:8] = 0.7  # ... except here: a candidate that post-processing removed from the mask
    tumour_zyx = arrange(tumour)
    np.savez_compressed(folder / f"{case}.npz", probabilities=np.stack([1 - tumour_zyx, tumour_zyx]))
    return label


def test_npz_probabilities_are_read_in_nnunets_order(tmp_path):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir(), preds.mkdir()
    _nnunet_case(preds, labels)
    (preds / "c1.pkl").write_bytes(b"not read")
    result = evaluate_folders(labels, preds, config=FAST, progress=False)
    cands = result.candidates.sort_values("confidence", ascending=False)
    assert cands["confidence"].round(4).tolist()[:2] == [0.9, 0.7]
    assert cands["status"].tolist()[:2] == ["tp", "fp"] and cands["best_iou"].tolist()[0] == 1.0
    assert result.per_case.loc[0, "dice"] == 1.0
    assert result.summary["inputs"]["probabilities"] == "1 of 1 scans"


@pytest.mark.parametrize("arrange", [
    lambda xyz: xyz,  # nibabel's (x, y, z) order, not transposed: another shape
    lambda xyz: xyz[::-1, ::-1].transpose(2, 1, 0),  # reoriented to RAS first (NibabelIOWithReorient): same shape
    lambda xyz: xyz.transpose(2, 0, 1),
])  # fmt: skip
def test_npz_in_another_order_is_refused(tmp_path, arrange):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir(), preds.mkdir()
    _nnunet_case(preds, labels, arrange=arrange)
    with pytest.raises(ValueError, match=r"c1\.npz: .*(do not fit the mask|probability < 0\.5)"):
        evaluate_folders(labels, preds, config=FAST, progress=False)


def test_npz_problems_are_one_line(tmp_path):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir(), preds.mkdir()
    _nnunet_case(preds, labels)
    shutil.copy(preds / "c1.nii.gz", preds / "c1_prob.nii.gz")
    with pytest.raises(ValueError, match=r"two probability maps \(c1_prob\.nii\.gz and c1\.npz\)"):
        evaluate_folders(labels, preds, config=FAST, progress=False)
    (preds / "c1_prob.nii.gz").unlink()
    p = np.load(preds / "c1.npz")["probabilities"]
    np.savez(preds / "c1.npz", probabilities=np.concatenate([p, p[:1] * 0]))
    with pytest.raises(ValueError, match="3 classes; amt evaluates one tumour class"):
        evaluate_folders(labels, preds, config=FAST, progress=False)
    np.savez(preds / "c1.npz", softmax=p)
    with pytest.raises(ValueError, match="no 'probabilities' array"):
        evaluate_folders(labels, preds, config=FAST, progress=False)


def test_probability_map_of_another_case_is_refused(tmp_path):
    """A ``{case}_prob.nii.gz`` must be the map its mask was thresholded from: the map of another scan (its
    mask voxels below the mask's threshold) is refused, naming both files, instead of scoring the scan's
    detection from one map and its segmentation from another mask; the mask's own map is accepted."""
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    labels.mkdir(), preds.mkdir()
    label = np.zeros((12, 10, 8), np.uint8)
    label[4:8, 3:6, 2:6] = 1
    nib.save(nib.Nifti1Image(label, AFFINE), str(labels / "c1.nii.gz"))
    nib.save(nib.Nifti1Image(label, AFFINE), str(preds / "c1.nii.gz"))
    own = np.where(label > 0, 0.9, 0.05).astype(np.float32)
    own[0:2, 0:2, 0:2] = 0.8  # dropped from the mask by post-processing: allowed
    nib.save(nib.Nifti1Image(own, AFFINE), str(preds / "c1_prob.nii.gz"))
    result = evaluate_folders(labels, preds, config=FAST, progress=False)
    assert result.per_case.loc[0, "dice"] == 1.0 and result.per_case.loc[0, "tp"] == 1
    other = np.zeros(label.shape, np.float32)
    other[0:3, 0:3, 0:3] = 0.95  # another scan's map: its tumour elsewhere
    nib.save(nib.Nifti1Image(other, AFFINE), str(preds / "c1_prob.nii.gz"))
    with pytest.raises(ValueError, match=r"c1_prob\.nii\.gz: 48 of 48 voxels of the mask c1\.nii\.gz have "
                       r"tumour probability < 0\.5"):  # fmt: skip
        evaluate_folders(labels, preds, config=FAST, progress=False)
    run = _amt("--labels", labels, "--predictions", preds, "--out", tmp_path / "out", "--no-progress")
    assert run.returncode == 2 and "c1_prob.nii.gz: 48 of 48 voxels" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()
