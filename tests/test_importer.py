"""Importing real-world scans into a cohort folder, with no identifying DICOM tag in any output."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from amt_core.atomic import OutputExistsError
from amt_core.data.cases import CaseTableError, read_cases
from amt_core.data.importer import import_cohort
from amt_core.data.privacy import parse_age, pseudonymise, vendor_name
from amt_core.data.volume import VolumeError, read_label, read_volume, write_volume
from amt_core.registry import CASE_COLUMNS

KEY = "test-secret"
#: the `amt` command, run in a fresh interpreter
AMT = [sys.executable, "-c", "import sys; from amt_core.cli import main; sys.exit(main())"]
#: identifying fragments: none may appear in any file, file name, log line or printed output
FRAGMENTS = [
    "Doe", "Johnathan", "Quincy", "99887766", "19510203", "5551234", "Example General", "Privacy Lane",
    "Springfield", "Welby", "Tamsin", "CTSTATION77", "STUDY4242", "SN31337", "20200131",
]  # fmt: skip


def _ct_lps(shape, seed):
    rng = np.random.default_rng(seed)
    hu = np.full(shape, -1000.0)
    hu[2:-2, 2:-2, :] = rng.normal(40, 10, (shape[0] - 4, shape[1] - 4, shape[2])).round()
    return hu


def _mask_for(image_path: Path, out: Path, value: int = 1) -> Path:
    image = read_volume(image_path)
    mask = np.zeros(image.shape, np.uint8)
    mask[3:7, 3:6, 1:4] = value
    return write_volume(mask, image.affine, out)


@pytest.fixture
def source(tmp_path, make_dicom_series, dicom_identity):
    """Four scans: two DICOM series from one hospital (names in the tags), a NIfTI and an NRRD."""
    import SimpleITK as sitk

    src = tmp_path / "source"
    a = make_dicom_series(src / "dicom_a", _ct_lps((12, 10, 6), 0))
    other = dict(dicom_identity, PatientID="MRN-11112222", PatientName="Roe^Richard")
    b = make_dicom_series(src / "dicom_b", _ct_lps((12, 10, 6), 1), identity=other, sex="M", age="045Y",
                          manufacturer="GE MEDICAL SYSTEMS")  # fmt: skip
    nifti = write_volume(
        _ct_lps((12, 10, 8), 2).astype(np.float32), np.diag([0.7, 0.7, 3.0, 1]), src / "c.nii.gz"
    )
    nrrd_img = sitk.GetImageFromArray(_ct_lps((8, 10, 12), 3).astype(np.int16))  # (z, y, x) LPS
    nrrd_img.SetSpacing((0.9, 0.9, 1.5))
    sitk.WriteImage(nrrd_img, str(src / "d.nrrd"))
    for name, image in [("a", a), ("b", b), ("c", nifti), ("d", src / "d.nrrd")]:
        _mask_for(image, src / f"{name}_mask.nii.gz")
    meta = pd.DataFrame({
        "image": ["dicom_a", "dicom_b", "c.nii.gz", "d.nrrd"],
        "label": ["a_mask.nii.gz", "b_mask.nii.gz", "c_mask.nii.gz", "d_mask.nii.gz"],
        "split": ["train", "tune", "test", "train"],
        "institution": ["", "", "Third Clinic Oslo", "st. example GENERAL hospital"],
        "sex": ["", "", "F", "M"],
        "age": ["", "", "52", "71"],
        "histology": ["thymoma_AB", "thymoma_B2", "thymic_carcinoma", "lymphoma"],
        "contrast": ["venous", "none", "venous", "arterial"],
    })  # fmt: skip
    meta.to_csv(src / "metadata.csv", index=False)
    return src


def _all_output_text(root: Path) -> bytes:
    blobs = []
    for path in root.rglob("*"):
        blobs.append(str(path.relative_to(root)).encode())
        if path.is_file():
            data = path.read_bytes()
            blobs.append(gzip.decompress(data) if path.name.endswith(".gz") else data)
    return b"\n".join(blobs)


def _assert_no_identity(blob: bytes | str, where: str) -> None:
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    for fragment in FRAGMENTS:
        assert fragment.lower() not in text.lower(), f"{fragment!r} leaked into {where}"


def test_import_dicom_nifti_nrrd(source, tmp_path, caplog):
    out = tmp_path / "cohort"
    with caplog.at_level(logging.DEBUG):
        df = import_cohort(source, source / "metadata.csv", out, key=KEY)
    assert list(df.columns) == list(CASE_COLUMNS)
    assert df["case_id"].tolist() == ["case_0001", "case_0002", "case_0003", "case_0004"]
    assert (out / "imagesTr/case_0001_0000.nii.gz").is_file()
    assert (out / "labelsTs/case_0003.nii.gz").is_file()
    assert (out / "dataset.json").is_file() and (out / "provenance.json").is_file()
    assert read_cases(out / "cases.csv").equals(df)

    # institutions: keyed-hash pseudonyms, consistent between the DICOM tag and a CSV spelling of it
    inst = df["institution_id"].tolist()
    assert all(re.fullmatch(r"INST-[0-9a-f]{8}", i) for i in inst)
    assert inst[0] == inst[1] == inst[3] == pseudonymise("St Example General Hospital", KEY.encode())
    assert inst[2] != inst[0]
    # patients: pseudonyms of the DICOM PatientID, generated otherwise
    assert (
        re.fullmatch(r"PAT-[0-9a-f]{8}", df["patient_id"][0]) and df["patient_id"][0] != df["patient_id"][1]
    )
    assert df["patient_id"][2] == "pat_0003"
    # DICOM fills what the CSV leaves empty; the CSV wins where it speaks
    assert df["sex"].tolist() == ["F", "M", "F", "M"]
    assert df["age"].tolist() == [67, 45, 52, 71]
    assert df["vendor"].tolist()[:2] == ["Siemens", "GE"]
    assert df["slice_thickness_mm"].tolist() == pytest.approx([2.5, 2.5, 3.0, 1.5])
    # tumour volume measured from the mask: 4*3*3 voxels
    assert df["tumour_volume_ml"][0] == pytest.approx(36 * 0.8 * 0.8 * 2.5 / 1000, abs=1e-3)

    # voxels survive, in RAS, stored compactly as int16
    for case, src in [(0, "dicom_a"), (2, "c.nii.gz"), (3, "d.nrrd")]:
        original = read_volume(source / src)
        imported = read_volume(df["image"][case])
        np.testing.assert_array_equal(imported.array, original.array)
        np.testing.assert_allclose(imported.affine, original.affine, atol=1e-4)
        assert read_label(df["label"][case], imported).array.sum() == 36
    import nibabel as nib

    assert nib.load(df["image"][0]).get_data_dtype() == np.int16

    _assert_no_identity(_all_output_text(out), "the cohort folder")
    _assert_no_identity(caplog.text, "the log")
    assert "case_0004: converted" in caplog.text


def test_cli_import_and_validate(source, tmp_path):
    out = tmp_path / "cohort_cli"
    env = {**os.environ, "AMT_PSEUDONYM_KEY": KEY}
    done = subprocess.run(
        [*AMT, "import", "--source", str(source),
         "--metadata", str(source / "metadata.csv"), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OK: imported 4 cases" in done.stdout
    _assert_no_identity(done.stdout + done.stderr, "the command's output")
    _assert_no_identity(_all_output_text(out), "the cohort folder")
    df = pd.read_csv(out / "cases.csv")
    assert df["institution_id"][0] == pseudonymise("St Example General Hospital", KEY.encode())

    ok = subprocess.run([*AMT, "validate", str(out / "cases.csv")],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: 4 cases (2 train, 1 tune, 1 test)")

    again = subprocess.run(
        [*AMT, "import", "--source", str(source),
         "--metadata", str(source / "metadata.csv"), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2
    assert "exists and is not empty" in again.stderr and "Traceback" not in again.stderr


def test_cli_validate_prints_every_problem(tiny_cohort):
    df = pd.read_csv(tiny_cohort / "cases.csv", dtype=str)
    df.loc[0, "institution_id"] = "INST-C"  # leakage
    df.loc[1, "case_id"] = "case_001"  # duplicate
    df.loc[2, "sex"] = "unknown"
    df.to_csv(tiny_cohort / "cases.csv", index=False)
    done = subprocess.run([*AMT, "validate", str(tiny_cohort / "cases.csv")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "3 problem(s)" in done.stderr
    for expected in [
        "leakage: test-split institution(s) ['INST-C']",
        "duplicate case_id",
        "unknown sex ['unknown']",
    ]:
        assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_metadata_problems_listed_before_any_conversion(source, tmp_path):
    meta = pd.read_csv(source / "metadata.csv", dtype=str)
    meta.loc[0, "image"] = "no_such_series"
    meta.loc[1, "split"] = "holdout"
    meta.loc[2, "institution"] = "St Example General Hospital"  # the test case's hospital is also in train
    meta.to_csv(source / "metadata.csv", index=False)
    out = tmp_path / "cohort"
    with pytest.raises(CaseTableError) as info:
        import_cohort(source, source / "metadata.csv", out, key=KEY)
    message = str(info.value)
    assert "row 2: image not found" in message
    assert "row 2: no institution" in message  # the missing series cannot name its hospital
    assert "unknown split ['holdout']" in message
    # named by the CSV's rows (the pseudonym is nowhere in the CSV): test row 4's hospital has train row 5
    assert re.search(
        r"leakage: the institution of test row\(s\) 4 \(INST-[0-9a-f]{8}\) also has row\(s\) 5 \(train\): "
        r"the external test must come from institutions seen in no other split",
        message,
    )
    assert message.count("leakage") == 1
    _assert_no_identity(message, "the error message")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_csv_vendors_are_named_as_dicom_ones_and_an_unkeyed_import_says_so(
    source, tmp_path, caplog, monkeypatch
):
    """A CSV's "SIEMENS" and "Siemens Healthineers" are one vendor (as a DICOM Manufacturer would be), never
    two sub-group levels; an unknown vendor is kept as written. Without a pseudonym key the import warns that
    its pseudonyms hold for this import only, and provenance.json says so, with the metadata's SHA-256."""
    from amt_core.atomic import file_hash

    monkeypatch.delenv("AMT_PSEUDONYM_KEY", raising=False)
    meta = pd.read_csv(source / "metadata.csv", dtype=str)
    meta["vendor"] = ["SIEMENS", "Siemens Healthineers", "GE MEDICAL SYSTEMS", "United Imaging"]
    meta.to_csv(source / "metadata.csv", index=False)
    out = tmp_path / "cohort"
    with caplog.at_level(logging.WARNING):
        df = import_cohort(source, source / "metadata.csv", out)
    assert df["vendor"].tolist() == ["Siemens", "Siemens", "GE", "United Imaging"]
    assert any("AMT_PSEUDONYM_KEY is not set" in r.getMessage() for r in caplog.records)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["pseudonym_key"].startswith("random")
    assert prov["input_hashes"] == {"metadata": file_hash(source / "metadata.csv")}


def test_failed_conversion_leaves_nothing(source, tmp_path):
    """A mask with values {0, 2, 7} stops the import with an error naming the case and file; no cohort
    folder and no staging folder remain."""
    image = read_volume(source / "c.nii.gz")
    mask = np.zeros(image.shape, np.uint8)
    mask[1, 1, 1], mask[2, 2, 2] = 2, 7
    write_volume(mask, image.affine, source / "c_mask.nii.gz")
    out = tmp_path / "cohort"
    with pytest.raises(CaseTableError, match=r"case case_0003: .*c_mask\.nii\.gz: label has values \[2, 7\]"):
        import_cohort(source, source / "metadata.csv", out, key=KEY)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]
    # with binarise_labels the same mask is accepted (every non-zero voxel becomes tumour)
    df = import_cohort(source, source / "metadata.csv", out, key=KEY, binarise_labels=True)
    assert read_label(df["label"][2], read_volume(df["image"][2])).array.sum() == 2


def test_overwrite_replaces_cohort(source, tmp_path):
    out = tmp_path / "cohort"
    import_cohort(source, source / "metadata.csv", out, key=KEY)
    with pytest.raises(OutputExistsError, match="not empty"):
        import_cohort(source, source / "metadata.csv", out, key=KEY)
    (out / "stale.txt").write_text("old")
    import_cohort(source, source / "metadata.csv", out, key="another-key", overwrite=True)
    assert not (out / "stale.txt").exists()
    assert read_cases(out / "cases.csv")["institution_id"][0] != pseudonymise(
        "St Example General Hospital", KEY.encode()
    )


def test_user_given_ids_are_kept(source, tmp_path):
    meta = pd.read_csv(source / "metadata.csv", dtype=str)
    meta["case_id"] = ["A1", None, "case_0001", "B7"]
    meta["institution_id"] = ["H1", "H1", "H2", "H1"]
    meta.to_csv(source / "metadata.csv", index=False)
    df = import_cohort(source, source / "metadata.csv", tmp_path / "cohort", key=KEY)
    assert df["case_id"].tolist() == ["A1", "case_0002", "case_0001", "B7"]
    assert df["institution_id"].tolist() == ["H1", "H1", "H2", "H1"]  # already pseudonyms: kept


@pytest.mark.realdata
def test_import_real_jpeg2000_dicom(realdata, tmp_path):
    """The real JPEG 2000 series imports; its InstitutionAddress and StationName do not reach the output."""
    src = realdata / "ts_abdomen_dicom"
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"image": ["dicom"], "label": ["seg_totalsegmentator.nii.gz"], "split": ["test"],
                  "institution_id": ["INST-0001"], "sex": ["M"]}).to_csv(meta, index=False)  # fmt: skip
    out = tmp_path / "cohort"
    df = import_cohort(src, meta, out, key=KEY, binarise_labels=True)
    assert df["vendor"][0] == "Siemens" and df["slice_thickness_mm"][0] == 3.0
    image = read_volume(df["image"][0])
    assert image.shape == (512, 512, 20) and image.array.min() == -1024 and image.array.max() == 1839
    blob = _all_output_text(out).decode("latin-1").lower()
    for fragment in ["petersgraben", "basel", "petct2", "1.3.12.2.1107.5.1.4.60064"]:
        assert fragment not in blob, fragment


@pytest.mark.parametrize(
    ("value", "years"),
    [("045Y", 45), ("006M", 0), ("003W", 0), ("095Y", 90), ("", None), ("abc", None), (None, None)],
)
def test_parse_age(value, years):
    assert parse_age(value) == years


@pytest.mark.parametrize(
    ("manufacturer", "vendor"),
    [("GE MEDICAL SYSTEMS", "GE"), ("SIEMENS", "Siemens"), ("Philips Medical Systems", "Philips"),
     ("TOSHIBA", "Canon"), ("Canon Medical Systems", "Canon"), ("FUJIFILM Corporation", "Fujifilm"),
     ("Neusoft", "Neusoft"), (None, None)],
)  # fmt: skip
def test_vendor_name(manufacturer, vendor):
    assert vendor_name(manufacturer) == vendor


def test_pseudonyms_are_keyed_and_normalised():
    key = b"k1"
    assert pseudonymise("St. Example  General-Hospital", key) == pseudonymise(
        "st example general hospital", key
    )
    assert pseudonymise("St Example General Hospital", key) != pseudonymise(
        "St Example General Hospital", b"k2"
    )
    assert pseudonymise("A", key) != pseudonymise("B", key)
    with pytest.raises(ValueError):
        pseudonymise("  ", key)


# --- no silent wrong answer (issue 9) -------------------------------------------------------------------

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _run_cli(capsys, *args) -> tuple[int, str]:
    """``amt ARGS`` in-process: (exit status, stderr)."""
    from amt_core.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code:
        assert out == ""
    return code, err


def _one_line(err: str, *expected) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in expected:
        assert str(text) in lines[0], (text, lines[0])
    return lines[0]


def _nifti_case(src: Path, name: str, hu: np.ndarray, split: str = "train") -> dict:
    image = write_volume(hu.astype(np.float32), AFFINE, src / f"{name}.nii.gz")
    _mask_for(image, src / f"{name}_mask.nii.gz")
    return {
        "image": image.name,
        "label": f"{name}_mask.nii.gz",
        "split": split,
        "institution": "Clinic B" if split == "test" else "Clinic A",
        "sex": "F",
    }


def _import_args(src: Path, rows: list[dict], out: Path, *extra) -> list:
    pd.DataFrame(rows).to_csv(src / "meta.csv", index=False)
    return ["import", "--source", src, "--metadata", src / "meta.csv", "--out", out, *extra]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_import_refuses_a_gzip_failing_its_crc_check(tmp_path, capsys):
    """A .nii.gz whose voxel bytes changed (stored deflate blocks: only the CRC-32 can tell) was imported."""
    src, out = tmp_path / "src", tmp_path / "cohort"
    rows = [_nifti_case(src, name, _ct_lps((12, 10, 8), seed)) for seed, name in enumerate(["good", "bad"])]
    bad = src / "bad.nii.gz"
    data = bytearray(gzip.compress(gzip.decompress(bad.read_bytes()), compresslevel=0))
    data[len(data) // 2] ^= 0x10  # one voxel byte; nibabel alone still reads an array
    bad.write_bytes(bytes(data))
    assert np.asanyarray(nib.load(bad).dataobj).shape == (12, 10, 8)

    code, err = _run_cli(capsys, *_import_args(src, rows, out))
    assert code == 2
    _one_line(err, "amt import: error:", "case_0002:", bad, "CRC check failed")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    # an existing cohort is left byte-identical by a failed --overwrite
    assert _run_cli(capsys, *_import_args(src, rows[:1], out))[0] == 0
    before = _tree(out)
    code, err = _run_cli(capsys, *_import_args(src, rows, out, "--overwrite"))
    assert code == 2 and _tree(out) == before


def test_cli_import_refuses_images_that_are_not_ct(tmp_path, capsys):
    """What `amt predict` refuses is refused at the door, every case reported at once."""
    src, out = tmp_path / "src", tmp_path / "cohort"
    shape = (12, 10, 8)
    rows = [
        _nifti_case(src, "unit", np.linspace(0, 1, 960).reshape(shape)),  # 0..1 floats
        _nifti_case(src, "mr_like", np.linspace(0, 4000, 960).reshape(shape)),  # no air
        _nifti_case(src, "constant", np.full(shape, -1000.0), split="tune"),
        _nifti_case(src, "ct", _ct_lps(shape, 3), split="test"),
    ]
    code, err = _run_cli(capsys, *_import_args(src, rows, out))
    assert code == 2
    assert "3 problem(s)" in err
    for case, name, found in [
        ("case_0001", "unit", "intensities 0..1"),
        ("case_0002", "mr_like", "intensities 0..4000"),
        ("case_0003", "constant", "a constant image (every voxel -1000)"),
    ]:
        assert f"case {case}: {src / name}.nii.gz: not a CT in Hounsfield units: {found} (expected air" in err
    assert "case_0004" not in err
    assert not out.exists()


def _two_series(folder: Path, make_dicom_series) -> tuple[str, str]:
    """Two DICOM series in ``folder``: A (Siemens, 6 slices of 2.5 mm, no description) and B (GE, 4 slices
    of 5 mm, 'LOCALIZER'), whose files sort first. Returns their SeriesInstanceUIDs."""
    import pydicom

    make_dicom_series(folder, _ct_lps((12, 10, 6), 0))
    other = make_dicom_series(folder.parent / "other_series", _ct_lps((12, 10, 4), 1),
                              spacing=(0.8, 0.8, 5.0), manufacturer="GE MEDICAL SYSTEMS")  # fmt: skip
    for path in sorted(other.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SeriesDescription = "LOCALIZER"
        ds.save_as(folder / f"b_{path.name}")
        path.unlink()
    other.rmdir()

    def uid(name: str) -> str:
        return str(pydicom.dcmread(folder / name, stop_before_pixels=True).SeriesInstanceUID)

    return uid("slice000.dcm"), uid("b_slice000.dcm")


def _series_mask(folder: Path, uid: str, out: Path) -> Path:
    image = read_volume(folder, series_uid=uid)
    mask = np.zeros(image.shape, np.uint8)
    mask[3:7, 3:6, 1:3] = 1
    return write_volume(mask, image.affine, out)


def test_two_dicom_series_are_refused_and_listed(tmp_path, make_dicom_series, capsys):
    """Pixels came from the largest series, metadata (vendor, thickness) from another: now refused."""
    src, out = tmp_path / "src", tmp_path / "cohort"
    folder = src / "mixed"
    uid_a, uid_b = _two_series(folder, make_dicom_series)
    listing = [f"{uid_a} 'no description' (6 slice(s))", f"{uid_b} 'LOCALIZER' (4 slice(s))"]
    with pytest.raises(VolumeError) as info:
        read_volume(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: 2 DICOM series in one folder: ")
    assert all(text in message for text in listing) and "series_uid" in message and "\n" not in message

    _series_mask(folder, uid_a, src / "mask.nii.gz")
    rows = [{"image": "mixed", "label": "mask.nii.gz", "split": "train", "institution": "Clinic A"}]
    code, err = _run_cli(capsys, *_import_args(src, rows, out))
    assert code == 2  # one line: no follow-on problem (e.g. 'empty sex') for the metadata DICOM would fill
    _one_line(err, "amt import: error:", "row 2:", folder, "2 DICOM series", *listing)
    assert not out.exists()


@pytest.mark.parametrize("which", ["a", "b"])
def test_series_uid_picks_pixels_and_metadata_from_one_series(tmp_path, make_dicom_series, which):
    src = tmp_path / "src"
    folder = src / "mixed"
    uids = dict(zip("ab", _two_series(folder, make_dicom_series), strict=True))
    expected = {"a": ("Siemens", 2.5, 6), "b": ("GE", 5.0, 4)}[which]
    _series_mask(folder, uids[which], src / "mask.nii.gz")
    pd.DataFrame([{"image": "mixed", "label": "mask.nii.gz", "split": "train", "institution": "Clinic A",
                   "series_uid": uids[which]}]).to_csv(src / "meta.csv", index=False)  # fmt: skip
    df = import_cohort(src, src / "meta.csv", tmp_path / "cohort", key=KEY)
    assert (df["vendor"][0], df["slice_thickness_mm"][0]) == expected[:2]
    imported, original = read_volume(df["image"][0]), read_volume(folder, series_uid=uids[which])
    assert imported.shape == (12, 10, expected[2])
    np.testing.assert_array_equal(imported.array, original.array)
    assert uids[which] not in _all_output_text(tmp_path / "cohort").decode("latin-1")


def test_series_uid_errors(tmp_path, make_dicom_series):
    src = tmp_path / "src"
    folder = src / "mixed"
    uid_a, uid_b = _two_series(folder, make_dicom_series)
    with pytest.raises(
        VolumeError,
        match=rf"mixed: no DICOM series 1\.2\.3 in this folder \(present: {uid_a} "
        r"'no description' \(6 slice",
    ):
        read_volume(folder, series_uid="1.2.3")
    nifti = write_volume(_ct_lps((12, 10, 8), 0).astype(np.float32), AFFINE, src / "c.nii.gz")
    with pytest.raises(VolumeError, match=r"c\.nii\.gz: a series_uid \(1\.2\.3\) is given but this is not"):
        read_volume(nifti, series_uid="1.2.3")
    _series_mask(folder, uid_a, src / "mask.nii.gz")
    _mask_for(nifti, src / "c_mask.nii.gz")
    pd.DataFrame({"image": ["mixed", "c.nii.gz"], "label": ["mask.nii.gz", "c_mask.nii.gz"],
                  "split": ["train", "test"], "institution": ["Clinic A", "Clinic B"], "sex": ["F", "M"],
                  "series_uid": ["1.2.3", uid_b]}).to_csv(src / "meta.csv", index=False)  # fmt: skip
    with pytest.raises(CaseTableError) as info:
        import_cohort(src, src / "meta.csv", tmp_path / "cohort", key=KEY)
    assert info.value.problems[0].startswith(f"row 2: {folder}: no DICOM series 1.2.3 in this folder")
    assert info.value.problems[1] == f"row 3: series_uid {uid_b} is given but {nifti} is not a DICOM folder"
    assert len(info.value.problems) == 2


@pytest.mark.parametrize("damage", ["crc", "truncated", "not_gzip"])
def test_cli_validate_a_damaged_gzip_table(tiny_cohort, capsys, damage):
    """pandas decompresses a cases.csv.gz itself; a damaged one printed a traceback (exit 1)."""
    data = gzip.compress((tiny_cohort / "cases.csv").read_bytes(), mtime=0)
    data = {
        "crc": data[:-8] + bytes([data[-8] ^ 1]) + data[-7:],
        "truncated": data[: len(data) // 2],
        "not_gzip": (tiny_cohort / "cases.csv").read_bytes(),
    }[damage]
    path = tiny_cohort / "cases.csv.gz"
    path.write_bytes(data)
    code, err = _run_cli(capsys, "validate", path)
    assert code == 2
    _one_line(err, f"amt validate: error: {path}: cannot read the file (corrupt or truncated?)")
    # and a valid one still validates
    path.write_bytes(gzip.compress((tiny_cohort / "cases.csv").read_bytes()))
    assert _run_cli(capsys, "validate", path)[0] == 0


def test_cli_import_refuses_one_image_listed_twice(tmp_path, capsys):
    """The same source scan in a train row and a test row (another institution) would be one patient in two
    splits that no id check can see: refused, naming both rows, before anything is written."""
    src, out = tmp_path / "src", tmp_path / "cohort"
    rows = [_nifti_case(src, name, _ct_lps((12, 10, 8), seed)) for seed, name in enumerate(["a", "b"])]
    rows.append({**rows[0], "split": "test", "institution": "Clinic B"})
    rows.append(_nifti_case(src, "c", _ct_lps((12, 10, 8), 7), split="tune"))
    code, err = _run_cli(capsys, *_import_args(src, rows, out))
    assert code == 2 and not out.exists()
    assert "row 4: the same image as row 2" in err and "a.nii.gz" in err
    del rows[2]
    rows.append(_nifti_case(src, "d", _ct_lps((12, 10, 8), 8), split="test"))
    assert _run_cli(capsys, *_import_args(src, rows, out))[0] == 0
