"""Bad input: each kind gets its own test and a clear error that names the file; failed writes leave
nothing behind."""

from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from amt_core.data.cases import CaseTableError, read_cases
from amt_core.data.cohort import CASES_CSV
from amt_core.data.volume import (
    NotCTError,
    VolumeError,
    check_ct,
    read_label,
    read_probability,
    read_volume,
    write_volume,
)

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
    with pytest.raises(
        VolumeError, match=r"slice2d\.nii\.gz: expected a 3D volume, got a 2D array of shape \(12, 10\)"
    ):
        read_volume(path)


def test_single_slice(tmp_path):
    path = _nifti(tmp_path / "one_slice.nii.gz", _ct((12, 10, 1)))
    with pytest.raises(VolumeError, match=r"one_slice\.nii\.gz: expected a 3D volume, got a single slice"):
        read_volume(path)


def test_4d_array(tmp_path):
    path = _nifti(tmp_path / "series4d.nii.gz", _ct((12, 10, 8, 3)))
    with pytest.raises(
        VolumeError,
        match=r"series4d\.nii\.gz: expected a 3D volume, got a 4D array of shape \(12, 10, 8, 3\)",
    ):
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
    with pytest.raises(
        VolumeError, match=r"probability\.nii\.gz: label has non-integer values \(e\.g\. 0\.5\)"
    ):
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
        (
            "other_spacing",
            (12, 10, 8),
            np.diag([0.8, 0.8, 3.0, 1.0]),
            r"spacing \(0.8, 0.8, 3\) vs \(0.8, 0.8, 2.5\) mm",
        ),
        (
            "shifted",
            (12, 10, 8),
            AFFINE + np.array([[0, 0, 0, 5.0]] + [[0] * 4] * 3),
            r"affine differs: voxels lie up to 5 mm apart",
        ),
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
    with pytest.raises(
        CaseTableError, match=r"duplicate patient_id \['pat_001'\] in rows 2, 3 \(one scan per patient\)"
    ):
        read_cases(path)


def test_patient_in_two_splits(tiny_cohort):
    path = _edit_rows(
        tiny_cohort, [("patient_id", 4, "pat_001")]
    )  # case_005 (test) belongs to pat_001 (train)
    with pytest.raises(
        CaseTableError, match=r"leakage: patient pat_001 is in several splits \(test, train\)"
    ):
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


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path, monkeypatch):
    """write_volume writes beside and renames: a writer dying mid-file leaves the old volume intact."""
    path = write_volume(_ct(), AFFINE, tmp_path / "scan.nii.gz")
    old = path.read_bytes()

    def dies_half_way(img, filename):
        Path(filename).write_bytes(old[: len(old) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        write_volume(_ct(seed=1), AFFINE, path)
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["scan.nii.gz"]


# --- damage only the gzip check sees (issue 9) ----------------------------------------------------------


def _damage_gzip(path: Path, how: str, bit: int = 0x10) -> Path:
    """Damage a .nii.gz so that only gzip's own check (CRC-32 and length in the trailer) can tell:
    ``stored``: recompressed without compression (stored blocks), ``bit`` flipped in a byte of voxel data;
    ``late``: one bit flipped late in the deflate data; ``crc`` / ``isize``: one bit of the trailer."""
    data = bytearray(path.read_bytes())
    if how == "stored":
        data = bytearray(gzip.compress(gzip.decompress(bytes(data)), compresslevel=0, mtime=0))
        data[len(data) // 2] ^= bit
    elif how == "crc":
        data[-8] ^= 0x01
    elif how == "isize":
        data[-4] ^= 0x01
    elif how == "late":  # the last byte of the deflate data whose change still decodes (to wrong voxels)
        for offset in range(len(data) - 9, len(data) // 2, -1):
            trial = bytearray(data)
            trial[offset] ^= 0x01
            try:
                zlib.decompress(bytes(trial), wbits=31)
            except zlib.error as exc:
                if "incorrect data check" in str(exc):
                    data = trial
                    break
        else:
            raise AssertionError("no late byte found whose change only the CRC check sees")
    path.write_bytes(bytes(data))
    with pytest.raises(gzip.BadGzipFile, match="CRC check failed|Incorrect length"):
        gzip.decompress(bytes(data))
    return path


@pytest.mark.parametrize("how", ["stored", "late", "crc", "isize"])
def test_gzip_check_failure_is_an_error(tmp_path, how):
    """nibabel alone reads these files (it stops before the gzip trailer); our reader refuses them."""
    path = _damage_gzip(write_volume(_ct(), AFFINE, tmp_path / f"damaged_{how}.nii.gz"), how)
    assert np.asanyarray(nib.load(path).dataobj).shape == (12, 10, 8)  # silently wrong without the check
    with pytest.raises(
        VolumeError,
        match=rf"damaged_{how}\.nii\.gz: cannot read the volume \(corrupt or "
        r"truncated\?\): (CRC check failed|Incorrect length)",
    ):
        read_volume(path)


def test_gzip_check_failure_of_a_label(tmp_path, image):
    label = np.zeros(image.shape, np.uint8)
    label[2:5, 2:5, 2:5] = 1
    path = _damage_gzip(write_volume(label, image.affine, tmp_path / "label_crc.nii.gz"), "crc")
    with pytest.raises(VolumeError, match=r"label_crc\.nii\.gz: cannot read the volume .*CRC check failed"):
        read_label(path, image)


def test_gzip_nrrd_crc_failure_is_an_error(tmp_path):
    """SimpleITK (NrrdIO) checks the CRC of a gzip-encoded NRRD itself; the error names the file."""
    import SimpleITK as sitk

    path = tmp_path / "damaged.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(_ct((8, 10, 12))), str(path), True)  # encoding: gzip
    data = bytearray(path.read_bytes())
    assert b"encoding: gzip" in data[:1000]
    data[-8] ^= 0x01  # the CRC-32 of the gzip trailer (the data is last in the file)
    path.write_bytes(bytes(data))
    with pytest.raises(VolumeError, match=r"damaged\.nrrd: cannot read the volume"):
        read_volume(path)


def test_valid_gzip_still_reads_identically(tmp_path):
    array = _ct()
    back = read_volume(write_volume(array, AFFINE, tmp_path / "fine.nii.gz"))
    np.testing.assert_array_equal(back.array, array)
    stored = tmp_path / "stored.nii.gz"  # uncompressed deflate blocks and two gzip members are valid gzip
    raw = gzip.decompress((tmp_path / "fine.nii.gz").read_bytes())
    stored.write_bytes(gzip.compress(raw[:1000], compresslevel=0) + gzip.compress(raw[1000:]))
    np.testing.assert_array_equal(read_volume(stored).array, array)


# --- the CLI: one line naming the file, exit 2, nothing written -----------------------------------------


def _run_cli(capsys, *args) -> tuple[int, str]:
    """``amt ARGS`` in-process: (exit status, stderr); stdout must be empty on failure."""
    from amt_core.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    if code:
        assert out == ""
    return code, err


def _one_line(err: str, *expected) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in expected:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


def _predictions(cohort: Path, preds: Path, prob=None) -> list[str]:
    """Perfect masks (copies of the reference labels) for the test cases of ``cohort``, and ``prob``."""
    cases = read_cases(cohort / CASES_CSV)
    preds.mkdir()
    ids = []
    for row in cases[cases["split"] == "test"].itertuples():
        label = nib.load(row.label)
        write_volume(np.asarray(label.dataobj), label.affine, preds / f"{row.case_id}.nii.gz")
        if prob is not None:
            write_volume(prob(np.asarray(label.dataobj)), label.affine, preds / f"{row.case_id}_prob.nii.gz")
        ids.append(row.case_id)
    return ids


def _evaluate(capsys, cohort, preds, out):
    return _run_cli(
        capsys,
        "evaluate",
        "--cohort",
        cohort / CASES_CSV,
        "--predictions",
        preds,
        "--out",
        out,
        "--n-bootstrap",
        "0",
        "--no-progress",
    )


def test_cli_evaluate_refuses_a_damaged_prediction(tiny_cohort, tmp_path, capsys):
    """One voxel of a mask changed inside a stored deflate block: still a binary mask, so without the CRC
    check the scan would be scored on wrong voxels."""
    preds, out = tmp_path / "preds", tmp_path / "eval"
    ids = _predictions(tiny_cohort, preds)
    intact = np.asanyarray(nib.load(preds / f"{ids[-1]}.nii.gz").dataobj)
    damaged = _damage_gzip(preds / f"{ids[-1]}.nii.gz", "stored", bit=0x01)
    wrong = np.asanyarray(nib.load(damaged).dataobj)
    assert set(np.unique(wrong)) == {0, 1} and int(np.sum(wrong != intact)) == 1
    code, err = _evaluate(capsys, tiny_cohort, preds, out)
    assert code == 2
    _one_line(err, "amt evaluate: error:", damaged, "CRC check failed")
    assert not out.exists()


def test_cli_evaluate_refuses_a_reference_label_that_is_not_gzip(tiny_cohort, tmp_path, capsys):
    preds, out = tmp_path / "preds", tmp_path / "eval"
    ids = _predictions(tiny_cohort, preds)
    label = Path(read_cases(tiny_cohort / CASES_CSV).set_index("case_id").at[ids[0], "label"])
    label.write_text("not a NIfTI file\n")
    code, err = _evaluate(capsys, tiny_cohort, preds, out)
    assert code == 2
    _one_line(err, "amt evaluate: error:", label, "cannot read")
    assert not out.exists()


def test_cli_evaluate_names_prediction_and_reference_on_a_grid_mismatch(tiny_cohort, tmp_path, capsys):
    preds, out = tmp_path / "preds", tmp_path / "eval"
    ids = _predictions(tiny_cohort, preds)
    wrong = write_volume(np.zeros((12, 10, 9), np.uint8), AFFINE, preds / f"{ids[0]}.nii.gz")
    label = read_cases(tiny_cohort / CASES_CSV).set_index("case_id").at[ids[0], "label"]
    code, err = _evaluate(capsys, tiny_cohort, preds, out)
    assert code == 2
    _one_line(
        err,
        f"prediction {wrong} is not on the grid of reference label {label}: shape (12, 10, 9) vs (12, 10, 8)",
    )
    assert not out.exists()


# --- probability maps -------------------------------------------------------------------------------------


def _prob_file(path: Path, array: np.ndarray, slope: float | None = None) -> Path:
    img = nib.Nifti1Image(array, AFFINE)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return path


@pytest.fixture
def reference(tmp_path):
    label = np.zeros((12, 10, 8), np.uint8)
    label[4:8, 3:7, 2:6] = 1
    path = write_volume(label, AFFINE, tmp_path / "reference.nii.gz")
    return read_label(path, read_volume(path))


def _map(top: float, dtype=np.float32, low: float = 0.0) -> np.ndarray:
    array = np.full((12, 10, 8), low, dtype)
    array[4:8, 3:7, 2:6] = top
    return array


@pytest.mark.parametrize(
    ("name", "array", "slope", "expected"),
    [
        ("above_one", _map(12.0), None, r"values 0\.\.12 \(voxel type float32\)"),
        ("percent", _map(80.0, np.float64), None, r"values 0\.\.80 \(voxel type float64\)"),
        ("negative", _map(0.9, low=-0.2), None, r"values -0\.2\.\.0\.9 \(voxel type float32\)"),
        ("uint8_x2", _map(200, np.uint8), 2.0, r"values 0\.\.400 \(voxel type uint8 scaled by scl_slope 2"),
        ("int16", _map(200, np.int16), None, r"voxel type int16 with values 0\.\.200"),
        ("uint16", _map(60000, np.uint16), None, r"voxel type uint16 with values 0\.\.60000"),
    ],
)
def test_probability_map_out_of_range(tmp_path, reference, name, array, slope, expected):
    path = _prob_file(tmp_path / f"{name}_prob.nii.gz", array, slope)
    with pytest.raises(
        VolumeError,
        match=rf"{name}_prob\.nii\.gz: probability map .*{expected}.*must be "
        r"floating point in \[0, 1\], or uint8 0\.\.255",
    ) as info:
        read_probability(path, reference)
    assert "\n" not in str(info.value)


def test_probability_map_with_nan(tmp_path, reference):
    array = _map(0.7)
    array[0, 0, 0] = np.nan
    path = _prob_file(tmp_path / "nan_prob.nii.gz", array)
    with pytest.raises(VolumeError, match=r"nan_prob\.nii\.gz: probability map has 1 NaN or infinite voxel"):
        read_probability(path, reference)


def test_probability_maps_that_are_fine(tmp_path, reference):
    """amt's own maps (uint8 with scl_slope 1/255), float32 in [0, 1] (rounding above 1 clipped) and plain
    uint8 0..255 (read as /255)."""
    from amt_core.model.inference import write_outputs
    from amt_core.model.presets import get_config

    prob = _map(0.8)
    write_outputs(tmp_path, "own", prob, AFFINE, get_config("cpu"), (0.8, 0.8, 2.5))
    assert nib.load(tmp_path / "own_prob.nii.gz").get_data_dtype() == np.uint8
    cases = {
        "own_prob.nii.gz": 204 / 255,
        _prob_file(tmp_path / "float_prob.nii.gz", prob).name: 0.8,
        _prob_file(tmp_path / "rounding_prob.nii.gz", _map(1.0004)).name: 1.0,
        _prob_file(tmp_path / "uint8_prob.nii.gz", _map(255, np.uint8)).name: 1.0,
        _prob_file(tmp_path / "tiny_negative_prob.nii.gz", _map(0.5, low=-1e-4)).name: 0.5,
    }
    for name, top in cases.items():
        got = read_probability(tmp_path / name, reference).array
        assert got.dtype == np.float32 and got.min() >= 0.0, name
        assert float(got.max()) == pytest.approx(top, abs=1e-6), name


def test_cli_evaluate_refuses_a_probability_map_above_one(tiny_cohort, tmp_path, capsys):
    """A float map up to 12 was silently divided by 255, and every candidate vanished."""
    preds, out = tmp_path / "preds", tmp_path / "eval"
    _predictions(tiny_cohort, preds, prob=lambda label: label.astype(np.float32) * np.float32(12.0))
    code, err = _evaluate(capsys, tiny_cohort, preds, out)
    assert code == 2
    line = _one_line(
        err, "amt evaluate: error:", "_prob.nii.gz: probability map values 0..12 (voxel type float32)"
    )
    assert str(preds) in line
    assert not out.exists()


def test_cli_evaluate_reads_valid_probability_maps(tiny_cohort, tmp_path, capsys):
    preds, out = tmp_path / "preds", tmp_path / "eval"
    _predictions(tiny_cohort, preds, prob=lambda label: label.astype(np.float32) * np.float32(0.9))
    code, err = _evaluate(capsys, tiny_cohort, preds, out)
    assert code == 0, err
    per_case = pd.read_csv(out / "per_case.csv")
    assert per_case["dice"].tolist() == [1.0, 1.0] and per_case["tp"].tolist() == [1, 1]


# --- CT plausibility --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.linspace(0, 1, 960).reshape(12, 10, 8), r"intensities 0\.\.1"),
        (np.linspace(0, 4000, 960).reshape(12, 10, 8), r"intensities 0\.\.4000"),
        (np.full((12, 10, 8), -1000.0), r"a constant image \(every voxel -1000\)"),
        (np.full((12, 10, 8), 0.0), r"a constant image \(every voxel 0\)"),
    ],
)
def test_check_ct_refuses_non_ct(tmp_path, array, expected):
    vol = read_volume(write_volume(array.astype(np.float32), AFFINE, tmp_path / "not_ct.nii.gz"))
    with pytest.raises(
        NotCTError,
        match=r"not_ct\.nii\.gz: not a CT in Hounsfield units: "
        + expected
        + r" \(expected air near -1000 HU and tissue above 0\)",
    ):
        check_ct(vol)


def test_check_ct_accepts_ct_and_the_model_uses_the_same_check():
    from amt_core.model import preprocessing

    ct = np.full((12, 10, 8), -1000.0, np.float32)
    ct[3:9, 3:7, :] = 40.0
    check_ct(ct, "ct")
    assert preprocessing.NotCTError is NotCTError and issubclass(NotCTError, VolumeError)
    with pytest.raises(NotCTError, match=r"x: not a CT in Hounsfield units: intensities 0\.\.4000"):
        preprocessing.check_ct(np.linspace(0, 4000, 8000).reshape(20, 20, 20), (1.0, 1.0, 1.0), "x", 15.0)


def test_cli_predict_refuses_a_damaged_image(tmp_path, capsys):
    """`amt predict` on a .nii.gz whose gzip CRC check fails: one line naming it, no prediction written."""
    import torch

    from amt_core.model.checkpoint import save_checkpoint
    from amt_core.model.network import build_network
    from amt_core.model.presets import get_config

    torch.manual_seed(0)
    cfg = get_config(
        "cpu",
        patch_size=(16, 16, 16),
        channels=(4, 8),
        strides=(2,),
        target_spacing=(4.0, 4.0, 4.0),
        intensity_stats={"lo": -200.0, "hi": 300.0, "mean": 40.0, "std": 60.0},
    )
    model = save_checkpoint(tmp_path / "best.pt", model=build_network(cfg), cfg=cfg) or tmp_path / "best.pt"
    ct = np.full((48, 48, 32), -1000.0, np.float32)
    ct[8:40, 8:40, :] = 40.0
    image = _damage_gzip(write_volume(ct, np.diag([1.0, 1.0, 1.5, 1.0]), tmp_path / "scan.nii.gz"), "stored")
    out = tmp_path / "pred"
    code, err = _run_cli(
        capsys,
        "predict",
        "--model",
        model,
        "--input",
        image,
        "--out",
        out,
        "--no-progress",
        "--device",
        "cpu",
    )
    assert code == 2
    _one_line(err, "amt predict: error:", image, "CRC check failed")
    assert not out.exists() or not any(out.rglob("*"))


def _break_series(folder: Path, how: str) -> None:
    """Damage a written series the ways real exports break (files slice000.dcm ... in slice order)."""
    import shutil

    import pydicom
    from pydicom.uid import generate_uid

    files = sorted(folder.glob("slice*.dcm"))
    if how == "missing slice":
        files[3].unlink()
    elif how == "duplicated slice":
        ds = pydicom.dcmread(files[2])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / "copy.dcm", enforce_file_format=True)
    elif how == "truncated pixels":
        data = files[3].read_bytes()
        files[3].write_bytes(data[:-40])
    elif how == "truncated header":
        data = files[3].read_bytes()
        files[3].write_bytes(data[:300])
    elif how in ("uneven pitch", "gantry tilt", "mixed orientation", "MR"):
        for k, f in enumerate(files):
            ds = pydicom.dcmread(f)
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            if how == "uneven pitch" and k >= 4:
                ds.ImagePositionPatient = [x, y, z + 1.5]
            elif how == "gantry tilt":
                ds.ImagePositionPatient = [x, y + 0.9 * k, z]
            elif how == "mixed orientation" and k == 5:
                ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]
            elif how == "MR":
                ds.Modality = "MR"
            ds.save_as(f, enforce_file_format=True)
    else:
        shutil.rmtree(folder)


def test_an_oblique_series_with_rounded_positions_is_one_grid(tmp_path, make_dicom_series):
    """An oblique series (rotated 2 degrees, no tilt) whose positions a scanner wrote to two decimals:
    rounding jitters each slice sideways by hundredths of a mm without adding up; it is not a tilt."""
    import pydicom

    folder = make_dicom_series(tmp_path / "series", np.full((8, 7, 30), -1000.0), spacing=(0.8, 0.8, 0.625))
    a = np.deg2rad(2.0)
    row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(a), -np.sin(a)])
    normal = np.cross(row, col)
    for k, f in enumerate(sorted(folder.glob("slice*.dcm"))):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [*row, *col]
        ds.ImagePositionPatient = [
            round(float(v), 2) for v in np.array([-20.0, -30.0, 100.0]) + k * 0.625 * normal
        ]
        ds.save_as(f, enforce_file_format=True)
    assert read_volume(folder).spacing == pytest.approx((0.8, 0.8, 0.625), abs=2e-3)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("missing slice", r"not evenly spaced: 5\.000 mm between slice002\.dcm and slice004\.dcm, 2\.500 mm"),
        ("uneven pitch", r"not evenly spaced: 4\.000 mm between slice003\.dcm and slice004\.dcm"),
        ("duplicated slice", r"(copy|slice002)\.dcm and (copy|slice002)\.dcm lie at the same position"),
        ("truncated pixels", r"slice003\.dcm: a file of the series that cannot be read"),
        ("truncated header", r"slice003\.dcm: a damaged DICOM file \(truncated\?\)"),
        ("gantry tilt", r"drift 8\.10 mm sideways over 22\.5 mm .*slice009\.dcm.* a gantry tilt"),
        ("mixed orientation", r"slice005\.dcm: the slice is oriented differently"),
        ("MR", r"modality 'MR', not CT"),
    ],
)
def test_dicom_series_that_is_not_one_regular_grid(tmp_path, make_dicom_series, how, expected):
    """A series with a missing, duplicated or damaged slice, an uneven pitch, a tilt or a stray orientation
    would be stacked on a wrong grid (a spacing averaged over the gap, every slice after it misplaced): it
    is refused, naming the folder or file and the fault. The complete series reads on its true grid."""
    hu = np.full((8, 7, 10), -1000.0)
    hu[2:6, 2:5, 2:8] = 40.0
    folder = make_dicom_series(tmp_path / "series", hu, spacing=(0.8, 0.8, 2.5))
    assert read_volume(folder).spacing == pytest.approx((0.8, 0.8, 2.5))
    _break_series(folder, how)
    with pytest.raises(VolumeError, match=expected):
        read_volume(folder)


@pytest.mark.realdata
@pytest.mark.parametrize("cut", [0, 64, 200, 400, 800, 1200])
@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("relpath", ["cip_thorax_lowres/dicom", "itkelastix_thorax/dicom_subset", "ts_abdomen_dicom/dicom"])  # fmt: skip
def test_a_real_slice_cut_inside_its_header_is_named_damaged(realdata, tmp_path, relpath, where, cut):
    """A slice cut short inside its header: GDCM leaves it out of the series, and pydicom either cannot read
    it (cut before the DICM marker) or reads it without a SeriesInstanceUID. It is named as damaged, not
    reported as a gap in the slice spacing (a middle slice) or silently dropped (the last slice: the volume
    would be one slice short); an empty file (cut at 0) cannot be told apart, so it is refused as such. A DICOMDIR beside the slices (no SeriesInstanceUID either) is no slice."""
    import shutil

    from pydicom.fileset import FileSet

    src = realdata / relpath
    folder = tmp_path / "series"
    shutil.copytree(src, folder)
    files = sorted(folder.iterdir())
    fs = FileSet()
    fs.add(realdata / "cip_thorax_lowres" / "dicom" / "IMG0001.dcm")  # has the UIDs a DICOMDIR record needs
    fs.write(tmp_path / "export")
    shutil.copy(tmp_path / "export" / "DICOMDIR", folder / "DICOMDIR")
    assert read_volume(folder).shape == read_volume(src).shape  # the DICOMDIR is not a slice
    victim = files[len(files) // 2] if where == "middle" else files[-1]
    victim.write_bytes(victim.read_bytes()[:cut])
    with pytest.raises(VolumeError) as info:
        read_volume(folder)
    message = str(info.value)
    assert message.startswith(f"{victim}: a"), message
    assert (
        "damaged DICOM file (truncated?)" in message
        or "cannot be read as an image (damaged" in message
        or (cut == 0 and "an empty file in the DICOM series folder" in message)
    ), message
