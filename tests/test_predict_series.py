"""`amt predict --series`: a DICOM folder holding two series of one real scan (the CIP thorax, 79 slices at
4 mm, and a thick reconstruction of it: 20 slices at 8 mm with its own SeriesInstanceUID, SOPInstanceUIDs
and SeriesDescription) is refused without --series, naming the folder and the option; with it, the mask,
the DICOM-SEG's references and the input's digest are that series' only, and --resume never mixes two."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from amt_core.data.masks import read_mask
from amt_core.data.predictions import file_digest, read_manifest
from amt_core.data.volume import read_volume

pytestmark = pytest.mark.realdata

#: the thick series: every other slice of IMG0011 ... IMG0050 (20 slices, 7.97 mm apart)
THICK = [f"IMG{k:04d}.dcm" for k in range(11, 51, 2)]


@pytest.fixture(scope="module")
def two_series(realdata, tmp_path_factory) -> tuple[Path, str, str]:
    """(folder, UID of the 79-slice series, UID of the 20-slice series): the real series copied unmodified,
    and the thick series written beside it with pydicom."""
    from pydicom.uid import generate_uid

    src = realdata / "cip_thorax_lowres" / "dicom"
    folder = tmp_path_factory.mktemp("export") / "CT0042"
    shutil.copytree(src, folder)
    thin = str(pydicom.dcmread(src / "IMG0001.dcm", stop_before_pixels=True).SeriesInstanceUID)
    thick = generate_uid()
    for n, name in enumerate(THICK):
        ds = pydicom.dcmread(src / name)
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.SeriesNumber = thick, "thick 8 mm", 2
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = n + 1
        ds.save_as(folder / f"THICK{n:03d}.dcm", enforce_file_format=True)
    return folder, thin, thick


def _cli(capsys, *args) -> tuple[int, str]:
    from amt_core.cli import main

    code = main([str(a) for a in (*args, "--no-progress", "--device", "cpu")])
    return code, capsys.readouterr().err.strip()


def _uids(folder: Path, series_uid: str) -> set[str]:
    headers = (pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.glob("*.dcm")))
    return {str(ds.SOPInstanceUID) for ds in headers if ds.SeriesInstanceUID == series_uid}


def test_without_series_the_folder_is_refused_naming_the_option(
    untrained_model, two_series, tmp_path, capsys
):
    folder, thin, thick = two_series
    code, err = _cli(
        capsys, "predict", "--model", untrained_model, "--input", folder, "--out", tmp_path / "out"
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{folder}: 2 DICOM series in one folder" in err and "amt predict --series UID" in err
    assert thin in err and thick in err and "'thick 8 mm' (20 slice(s))" in err
    assert "import metadata CSV" not in err  # the import's way to name a series is not predict's
    assert not (tmp_path / "out").exists()


def test_a_case_table_listing_a_folder_of_two_series_is_refused_before_anything_is_written(
    untrained_model, two_series, tmp_path, capsys
):
    """A case table names no series: a folder of several it lists is refused up front, saying how to name one
    (predict the folder alone with --series, or import it with the series_uid column)."""
    import pandas as pd

    from amt_core.registry import CASE_COLUMNS

    folder, thin, thick = two_series
    row = dict.fromkeys(CASE_COLUMNS, "")
    row.update(case_id="C1", patient_id="P1", institution_id="I1", split="test", image=str(folder))
    row.update(label=str(folder), histology="thymoma_A", contrast="none")
    table = tmp_path / "cases.csv"
    pd.DataFrame([row]).to_csv(table, index=False)
    code, err = _cli(
        capsys, "predict", "--model", untrained_model, "--input", table, "--out", tmp_path / "out"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{folder}: 2 DICOM series in one folder" in err and thin in err and thick in err
    assert "amt predict --series UID" in err and "series_uid column" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("which", ["thick", "thin"])
def test_series_picks_the_grid_the_seg_references_and_the_digest(
    untrained_model, two_series, tmp_path, capsys, which
):
    folder, thin, thick = two_series
    uid = {"thin": thin, "thick": thick}[which]
    out = tmp_path / "out"
    code, err = _cli(
        capsys, "predict", "--model", untrained_model, "--input", folder, "--out", out, "--series", uid
    )
    assert code == 0, err
    image = read_volume(folder, series_uid=uid)
    assert image.shape == (64, 64, {"thin": 79, "thick": 20}[which])
    mask = nib.load(out / "CT0042.nii.gz")
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine, atol=1e-4)
    seg = pydicom.dcmread(out / "CT0042_seg.dcm")
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == uid
    instances = {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence}
    assert instances == _uids(folder, uid)
    assert len(seg.PerFrameFunctionalGroupsSequence) == image.shape[2]  # a frame per slice of that series
    back = read_mask(out / "CT0042_seg.dcm", image, series_uid=uid)  # checks the references too
    assert np.array_equal(back.array, np.asarray(mask.dataobj))
    manifest = read_manifest(out)
    assert manifest["series_uid"] == uid
    assert manifest["cases"]["CT0042"]["dicom_seg"] == {"written": True}
    assert manifest["cases"]["CT0042"]["image_sha256"] == file_digest(folder, uid)


def test_series_is_refused_for_an_image_file_or_a_case_table(
    untrained_model, realdata, tiny_cohort, tmp_path, capsys
):
    image, table = realdata / "cip_thorax_lowres" / "ct.nii.gz", tiny_cohort / "cases.csv"
    for given, what in ((image, "an image file"), (table, "a case table")):
        out = tmp_path / f"out_{what[-4:]}"
        code, err = _cli(capsys, "predict", "--model", untrained_model, "--input", given, "--out", out,
                         "--series", "1.2.3")  # fmt: skip
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"{given}: --series 1.2.3 names a series of a DICOM folder, but this input is {what}" in err
        assert not out.exists()


def test_an_unknown_series_lists_those_present(untrained_model, two_series, tmp_path, capsys):
    folder, thin, thick = two_series
    out = tmp_path / "out"
    code, err = _cli(
        capsys, "predict", "--model", untrained_model, "--input", folder, "--out", out, "--series", "1.2.3"
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{folder}: no DICOM series 1.2.3 in this folder (present: {thin} " in err and thick in err
    assert not out.exists()


def test_the_digest_of_a_series_is_that_series_files(two_series, tmp_path):
    folder, thin, thick = two_series
    copy = tmp_path / "CT0042"
    shutil.copytree(folder, copy)
    before = {uid: file_digest(copy, uid) for uid in (thin, thick)}
    assert before[thin] != before[thick] != file_digest(copy)
    data = bytearray((copy / "IMG0002.dcm").read_bytes())  # a slice of the thin series only
    data[-1] ^= 0xFF
    (copy / "IMG0002.dcm").write_bytes(bytes(data))
    assert file_digest(copy, thin) != before[thin] and file_digest(copy, thick) == before[thick]
    (copy / "THICK005.dcm").unlink()  # a slice of the thick series gone
    assert file_digest(copy, thick) != before[thick]


def test_resume_with_another_series_is_refused(untrained_model, two_series, tmp_path):
    from amt_core.atomic import OutputExistsError
    from amt_core.model.inference import predict

    folder, thin, thick = two_series
    out = predict(untrained_model, folder, tmp_path / "out", progress=False, series_uid=thick)
    before = (out / "CT0042_seg.dcm").read_bytes()
    with pytest.raises(OutputExistsError, match=f"series_uid '{thick}', not '{thin}'"):
        predict(untrained_model, folder, out, progress=False, series_uid=thin, resume=True)
    predict(untrained_model, folder, out, progress=False, series_uid=thick, resume=True)  # the same: kept
    assert (out / "CT0042_seg.dcm").read_bytes() == before


def test_a_series_without_frame_of_reference_gets_its_mask_and_no_seg(
    untrained_model, realdata, tmp_path, capsys
):
    """Some anonymised exports drop FrameOfReferenceUID, which a DICOM-SEG must share with its source: the
    mask, probabilities and candidates are written as for any series, the SEG is skipped with one warning
    naming the series folder and what it lacks, and the manifest says so (resume and evaluate go on)."""
    from amt_core.data.predictions import check_evaluable

    folder = tmp_path / "ANON7"
    shutil.copytree(realdata / "cip_thorax_lowres" / "dicom", folder)
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    out = tmp_path / "out"
    code, err = _cli(capsys, "predict", "--model", untrained_model, "--input", folder, "--out", out)
    assert code == 0, err
    reason = (
        "its slices have no FrameOfReferenceUID (0020,0052), which a DICOM-SEG must share with its source "
        "(dropped by some anonymisers)"
    )
    assert err == (
        f"amt predict: warning: {folder}: no DICOM-SEG written for case ANON7: {reason}; its mask, "
        "probabilities and candidates are written (ANON7.nii.gz)"
    )
    image = read_volume(folder)
    mask = nib.load(out / "ANON7.nii.gz")
    assert mask.shape == image.shape == (64, 64, 79)
    assert np.allclose(mask.affine, image.affine, atol=1e-4)
    assert sorted(p.name for p in out.iterdir()) == [
        "ANON7.nii.gz",
        "ANON7_candidates.csv",
        "ANON7_prob.nii.gz",
        "predictions.csv",
        "predictions.json",
    ]
    case = read_manifest(out)["cases"]["ANON7"]
    assert case["dicom_seg"] == {"written": False, "reason": reason}
    assert sorted(case["files"]) == ["ANON7.nii.gz", "ANON7_candidates.csv", "ANON7_prob.nii.gz"]
    check_evaluable(out, ["ANON7"])  # `amt evaluate`'s manifest check
    before = (out / "ANON7.nii.gz").read_bytes()
    code, err = _cli(
        capsys, "predict", "--model", untrained_model, "--input", folder, "--out", out, "--resume"
    )
    # the finished case is kept, with its note, and the missing SEG is said again (one line)
    assert code == 0 and len(err.strip().splitlines()) == 1 and "no DICOM-SEG for case ANON7 (kept" in err
    assert reason in err
    assert (out / "ANON7.nii.gz").read_bytes() == before
    assert read_manifest(out)["cases"]["ANON7"]["dicom_seg"] == {"written": False, "reason": reason}


def test_a_series_anonymised_since_loses_its_seg_on_resume(untrained_model, realdata, tmp_path):
    """The series predicted with its SEG, then stripped of FrameOfReferenceUID: --resume predicts it again
    (its digest changed) and the SEG of the earlier version is not left behind as if it were this one's."""
    from amt_core.model.inference import predict

    folder = tmp_path / "CT5"
    shutil.copytree(realdata / "cip_thorax_lowres" / "dicom", folder)
    out = predict(untrained_model, folder, tmp_path / "out", progress=False, device="cpu")
    assert (out / "CT5_seg.dcm").is_file()
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    predict(untrained_model, folder, out, progress=False, device="cpu", resume=True)
    case = read_manifest(out)["cases"]["CT5"]
    assert not (out / "CT5_seg.dcm").exists() and "CT5_seg.dcm" not in case["files"]
    assert case["dicom_seg"]["written"] is False and case["image_sha256"] == file_digest(folder)
