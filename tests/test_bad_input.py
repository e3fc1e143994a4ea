"""Bad input: each kind gets its own test and a clear error that names the file; failed writes leave
nothing behind."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from amt_core.data import volume as volume_module
from amt_core.data.cases import CaseTableError, read_cases
from amt_core.data.cohort import CASES_CSV
from amt_core.data.volume import VolumeError, read_label, read_volume, write_volume

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _ct(shape=(12, 10, 8), seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(0, 50, shape) - 500).astype(np.float32)


def _nifti(path: Path, array: np.ndarray, affine=AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _rotated(affine: np.ndarray, degrees: float) -> np.ndarray:
    """``affine`` turned by ``degrees`` about the world z axis (through the origin)."""
    t = np.deg2rad(degrees)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return rot @ affine


@pytest.fixture
def image(tmp_path):
    path = write_volume(_ct(), AFFINE, tmp_path / "image.nii.gz")
    return read_volume(path)


# --- volumes ----------------------------------------------------------------------------------------------


def test_corrupt_gzip(tmp_path):
    path = write_volume(_ct(), AFFINE, tmp_path / "corrupt.nii.gz")
    data = bytearray(path.read_bytes())
    for i in range(40, len(data) - 20, 7):  # damage the deflate stream, keep the gzip magic
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(VolumeError, match=r"corrupt\.nii\.gz: cannot read"):
        read_volume(path)


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "plain_text.nii.gz"
    path.write_text("this is not a NIfTI file\n" * 20)
    with pytest.raises(VolumeError, match=r"plain_text\.nii\.gz: cannot read"):
        read_volume(path)


@pytest.mark.parametrize("name", ["truncated.nii.gz", "truncated.nii", "truncated.nrrd"])
def test_truncated_file(tmp_path, name):
    full = tmp_path / f"full_{name}"
    if name.endswith(".nrrd"):
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(_ct((8, 10, 12))), str(full))
    else:
        _nifti(full, _ct())
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeError, match=re.escape(name) + ": cannot read"):
        read_volume(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    with pytest.raises(VolumeError, match=r"empty\.nii\.gz"):
        read_volume(path)


def test_2d_array(tmp_path):
    path = _nifti(tmp_path / "slice2d.nii.gz", _ct((12, 10)))
    with pytest.raises(VolumeError, match=r"slice2d\.nii\.gz: expected a 3D volume, got a 2D array of shape \(12, 10\)"):
        read_volume(path)


def test_single_slice(tmp_path):
    path = _nifti(tmp_path / "one_slice.nii.gz", _ct((12, 10, 1)))
    with pytest.raises(VolumeError, match=r"one_slice\.nii\.gz: expected a 3D volume, got a single slice"):
        read_volume(path)


def test_4d_array(tmp_path):
    path = _nifti(tmp_path / "series4d.nii.gz", _ct((12, 10, 8, 3)))
    with pytest.raises(VolumeError, match=r"series4d\.nii\.gz: expected a 3D volume, got a 4D array of shape \(12, 10, 8, 3\)"):
        read_volume(path)


def test_trailing_singleton_axis_is_accepted(tmp_path):
    """(x, y, z, 1), common in NIfTI, is a 3D volume."""
    path = _nifti(tmp_path / "xyz1.nii.gz", _ct((12, 10, 8, 1)))
    assert read_volume(path).shape == (12, 10, 8)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_voxels(tmp_path, bad):
    array = _ct()
    array[3, 4, 5] = bad
    array[0, 0, 0] = bad
    path = _nifti(tmp_path / "with_nan.nii.gz", array)
    with pytest.raises(VolumeError, match=r"with_nan\.nii\.gz: 2 voxel\(s\) are NaN or infinite"):
        read_volume(path)


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match=r"nowhere\.nii\.gz: no such file"):
        read_volume(tmp_path / "nowhere.nii.gz")


def test_unknown_format(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(VolumeError, match=r"scan\.png: unknown volume format"):
        read_volume(path)


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(VolumeError, match=r"not_dicom: no DICOM series found"):
        read_volume(folder)


# --- labels -----------------------------------------------------------------------------------------------


def test_label_values_0_2_7(tmp_path, image):
    label = np.zeros(image.shape, np.uint8)
    label[2:4, 2:4, 2:4] = 2
    label[6:8, 6:8, 5:7] = 7
    path = write_volume(label, image.affine, tmp_path / "label_027.nii.gz")
    with pytest.raises(VolumeError) as info:
        read_label(path, image)
    message = str(info.value)
    assert "label_027.nii.gz" in message
    assert "values [2, 7] outside the allowed [0, 1]" in message
    assert "must be binary" in message
    # accepted when the caller asks for a multi-class integer mask
    assert set(np.unique(read_label(path, image, allowed=None).array)) == {0, 2, 7}


def test_label_non_integer(tmp_path, image):
    label = np.zeros(image.shape, np.float32)
    label[2:5, 2:5, 2:5] = 0.5
    path = write_volume(label, image.affine, tmp_path / "probability.nii.gz")
    with pytest.raises(VolumeError, match=r"probability\.nii\.gz: label has non-integer values \(e\.g\. 0\.5\)"):
        read_label(path, image, allowed=None)


def test_label_negative(tmp_path, image):
    label = np.zeros(image.shape, np.int16)
    label[1, 1, 1] = -1
    path = write_volume(label, image.affine, tmp_path / "negative.nii.gz")
    with pytest.raises(VolumeError, match=r"negative\.nii\.gz: label has negative values \[-1\]"):
        read_label(path, image, allowed=None)


def test_float_binary_label_is_fine(tmp_path, image):
    label = np.zeros(image.shape, np.float32)
    label[2:5, 2:5, 2:5] = 1.0
    lab = read_label(write_volume(label, image.affine, tmp_path / "float01.nii.gz"), image)
    assert lab.array.dtype == np.uint8 and int(lab.array.sum()) == 27


@pytest.mark.parametrize(
    ("name", "shape", "affine", "expected"),
    [
        ("other_shape", (12, 10, 9), AFFINE, r"shape \(12, 10, 9\) vs \(12, 10, 8\)"),
        ("other_spacing", (12, 10, 8), np.diag([0.8, 0.8, 3.0, 1.0]), r"spacing \(0.8, 0.8, 3\) vs \(0.8, 0.8, 2.5\) mm"),
        ("shifted", (12, 10, 8), AFFINE + np.array([[0, 0, 0, 5.0]] + [[0] * 4] * 3), r"affine differs: voxels lie up to 5 mm apart"),
        ("flipped", (12, 10, 8), np.diag([-0.8, 0.8, 2.5, 1.0]), "affine differs"),
        ("rotated", (12, 10, 8), _rotated(AFFINE, 2.0), r"affine differs: voxels lie up to 0.3\d* mm apart"),
    ],
)
def test_label_on_another_grid(tmp_path, image, name, shape, affine, expected):
    path = write_volume(np.zeros(shape, np.uint8), affine, tmp_path / f"{name}.nii.gz")
    with pytest.raises(VolumeError, match=expected) as info:
        read_label(path, image)
    message = str(info.value)
    assert f"label {path} is not on the grid of image {image.source}" in message


def test_label_within_tolerance(tmp_path, image):
    """Float rounding of the affine (well under 1 % of a voxel) is not a grid mismatch."""
    affine = image.affine.copy()
    affine[:3, 3] += 1e-4
    lab = read_label(write_volume(np.zeros(image.shape, np.uint8), affine, tmp_path / "ok.nii.gz"), image)
    assert lab.shape == image.shape


# --- case tables ------------------------------------------------------------------------------------------


def _edit_rows(root: Path, edits: list[tuple[str, int, str]]) -> Path:
    df = pd.read_csv(root / CASES_CSV, dtype=str)
    for column, row, value in edits:
        df.loc[row, column] = value
    df.to_csv(root / CASES_CSV, index=False)
    return root / CASES_CSV


def test_duplicate_case_ids(tiny_cohort):
    path = _edit_rows(tiny_cohort, [("case_id", 1, "case_001")])
    with pytest.raises(CaseTableError, match=r"duplicate case_id \['case_001'\] in rows 2, 3") as info:
        read_cases(path, check_files=False)
    assert str(path) in str(info.value)


def test_duplicate_patient_ids(tiny_cohort):
    path = _edit_rows(tiny_cohort, [("patient_id", 1, "pat_001")])
    with pytest.raises(CaseTableError, match=r"duplicate patient_id \['pat_001'\] in rows 2, 3 \(one scan per patient\)"):
        read_cases(path)


def test_patient_in_two_splits(tiny_cohort):
    path = _edit_rows(tiny_cohort, [("patient_id", 4, "pat_001")])  # case_005 (test) belongs to pat_001 (train)
    with pytest.raises(CaseTableError, match=r"leakage: patient pat_001 is in several splits \(test, train\)"):
        read_cases(path)


def test_test_institution_leaks_into_train(tiny_cohort):
    path = _edit_rows(tiny_cohort, [("institution_id", 0, "INST-C")])  # INST-C is a test institution
    with pytest.raises(CaseTableError) as info:
        read_cases(path)
    assert "leakage: test-split institution(s) ['INST-C'] also appear in train/tune" in str(info.value)
    assert len(info.value.problems) == 1


def test_test_institution_leaks_into_tune(tiny_cohort):
    path = _edit_rows(tiny_cohort, [("institution_id", 3, "INST-D")])  # case_004 is tune
    with pytest.raises(CaseTableError, match=r"leakage: test-split institution\(s\) \['INST-D'\]"):
        read_cases(path)


# --- failed writes ----------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch):
    target = write_volume(_ct(seed=1), AFFINE, tmp_path / "ct.nii.gz")
    before = target.read_bytes()

    def half_then_fail(img, filename):
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_volume(_ct(seed=2), AFFINE, target)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["ct.nii.gz"]


def test_failed_write_leaves_no_new_file(tmp_path, monkeypatch):
    def fail(img, filename):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        write_volume(_ct(), AFFINE, tmp_path / "new.nii.gz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("array", "name", "expected"),
    [
        (np.zeros((4, 4), np.float32), "flat.nii.gz", "expected a 3D array"),
        (np.zeros((4, 4, 4), np.float32), "wrong.nrrd", "write_volume writes NIfTI"),
    ],
)
def test_write_refuses_bad_input(tmp_path, array, name, expected):
    with pytest.raises(VolumeError, match=expected):
        write_volume(array, AFFINE, tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_write_is_deterministic(tmp_path):
    a = write_volume(_ct(), AFFINE, tmp_path / "a.nii.gz").read_bytes()
    b = write_volume(_ct(), AFFINE, tmp_path / "b.nii.gz").read_bytes()
    assert a == b
    assert gzip.decompress(a)[:4] == (348).to_bytes(4, "little")  # a NIfTI-1 header inside


def test_volume_module_has_no_partial_writer():
    """write_volume goes through amt_core.atomic (the only writer of volume files)."""
    assert volume_module.atomic_path.__module__ == "amt_core.atomic"
