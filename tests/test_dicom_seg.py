"""Predictions as DICOM-SEG over the source series: read back voxel for voxel (by our reader and by highdicom's
per-source-instance view, checked against world positions from the DICOM header), the segment described,
only the source's patient/study identifiers copied, and `amt predict` recording the SEG in its manifest."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from amt_core.data.dicom_seg import COPIED_FROM_SOURCE, write_dicom_seg
from amt_core.data.masks import read_mask
from amt_core.data.volume import Volume, dicom_series, read_volume


def _asymmetric_mask(shape) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    x, y, z = (s // 2 for s in shape)
    mask[1, 2, 1] = 1  # a lone voxel near a corner: any flip moves it
    mask[x : x + 3, y : y + 2, z] = 1
    mask[x, y, z + 1] = 1
    return mask


#: the real series: LPS storage, native 512x512 slices, JPEG 2000 with emptied SOPClassUID/SOPInstanceUID
REAL_SERIES = ["cip_thorax_lowres/dicom", "itkelastix_thorax/dicom_subset", "ts_abdomen_dicom/dicom"]


@pytest.fixture(params=["synthetic", *REAL_SERIES])
def series(request, tmp_path, make_dicom_series):
    if request.param != "synthetic":
        return request.getfixturevalue("realdata") / request.param
    hu = np.full((14, 11, 7), -1000.0)
    hu[3:10, 2:8, 1:6] = 40.0
    return make_dicom_series(tmp_path / "ct", hu)


def test_written_seg_reads_back_voxel_for_voxel(series, tmp_path):
    import highdicom as hd

    image = read_volume(series)
    mask = _asymmetric_mask(image.shape)
    path = write_dicom_seg(Volume(mask, image.affine, "pred"), series, tmp_path / "case_seg.dcm")
    assert np.array_equal(read_mask(path, image).array, mask)
    # independently: highdicom's frames per source instance, placed by the header's world positions
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_series(series)[0].files]
    sources = {ds.SOPInstanceUID or ds.file_meta.MediaStorageSOPInstanceUID: ds for ds in headers}
    seg = hd.seg.segread(path)
    uids = list(sources)
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0]
    world = set()
    for uid, frame in zip(uids, frames, strict=True):
        ds = sources[uid]
        row_dir, col_dir = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
        d_row, d_col = (float(v) for v in ds.PixelSpacing)
        for r, c in np.argwhere(frame):
            lps = np.asarray(ds.ImagePositionPatient, float) + c * d_col * row_dir + r * d_row * col_dir
            world.add(tuple(np.round(lps * [-1, -1, 1], 3)))
    expected = {tuple(np.round((image.affine @ np.append(v, 1.0))[:3], 3)) for v in np.argwhere(mask)}
    assert world == expected and len(expected) == int(mask.sum())


def test_seg_describes_the_segment_and_copies_only_patient_and_study(
    tmp_path, make_dicom_series, dicom_identity
):
    from amt_core import __version__

    hu = np.full((14, 11, 7), -1000.0)
    hu[3:10, 2:8, 1:6] = 40.0
    folder = make_dicom_series(tmp_path / "ct", hu)
    image = read_volume(folder)
    path = write_dicom_seg(
        Volume(_asymmetric_mask(image.shape), image.affine, "p"), folder, tmp_path / "s.dcm"
    )
    seg, src = pydicom.dcmread(path), pydicom.dcmread(dicom_series(folder)[0].files[0])
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "tumour" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "amt" and str(seg.SoftwareVersions) == __version__
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Neoplasm"
    raw = path.read_bytes()
    for keyword, value in dicom_identity.items():  # only what the Patient and General Study modules hold
        assert (value.encode() in raw) == (keyword in COPIED_FROM_SOURCE), keyword
    assert str(seg.PatientID) == dicom_identity["PatientID"]


def test_predict_on_a_dicom_series_writes_and_records_the_seg(tmp_path, make_dicom_series):
    import nibabel as nib
    import torch

    from amt_core.data.predictions import check_evaluable, read_manifest
    from amt_core.model.checkpoint import save_checkpoint
    from amt_core.model.inference import predict
    from amt_core.model.network import build_network
    from amt_core.model.presets import get_config

    torch.manual_seed(0)
    cfg = get_config("cpu", patch_size=(32, 32, 32), channels=(8, 16, 32), strides=(2, 2),
                     target_spacing=(4.0, 4.0, 4.0), roi="body",
                     intensity_stats={"lo": -200.0, "hi": 300.0, "mean": 40.0, "std": 60.0})  # fmt: skip
    save_checkpoint(tmp_path / "best.pt", model=build_network(cfg), cfg=cfg)
    hu = np.full((40, 36, 24), -1000.0)
    hu[8:32, 6:30, 2:22] = 40.0
    folder = make_dicom_series(tmp_path / "CASE7", hu, spacing=(2.0, 2.0, 3.0))
    out = predict(tmp_path / "best.pt", folder, tmp_path / "pred", progress=False)
    assert (out / "CASE7_seg.dcm").is_file()
    mask = np.asarray(nib.load(out / "CASE7.nii.gz").dataobj)
    back = read_mask(out / "CASE7_seg.dcm", read_volume(folder))
    assert np.array_equal(back.array, mask)
    assert "CASE7_seg.dcm" in read_manifest(out)["cases"]["CASE7"]["files"]
    check_evaluable(out, ["CASE7"])  # the manifest check of `amt evaluate` passes
    (out / "CASE7_seg.dcm").write_bytes((out / "CASE7_seg.dcm").read_bytes() + b"\0\0")
    with pytest.raises(ValueError, match="CASE7_seg.dcm is not the file that model wrote"):
        check_evaluable(out, ["CASE7"])


def test_a_seg_stored_beside_its_ct_is_not_a_second_series(tmp_path, make_dicom_series):
    """A DICOM-SEG (or structure set) in the CT's folder is an object about the scan, not a series of it."""
    import shutil

    import numpy as np

    from amt_core.data.dicom_seg import write_dicom_seg
    from amt_core.data.volume import Volume, dicom_series, read_volume

    hu = np.full((24, 20, 6), -1000.0)
    hu[4:20, 4:16] = 40.0
    folder = make_dicom_series(tmp_path / "ct", hu)
    image = read_volume(folder)
    mask = np.zeros(image.shape, np.uint8)
    mask[8:12, 8:12, 2:4] = 1
    seg = write_dicom_seg(Volume(mask, image.affine), folder, tmp_path / "seg.dcm")
    shutil.copy(seg, folder / "seg.dcm")
    assert len(dicom_series(folder)) == 1
    assert np.array_equal(read_volume(folder).array, image.array)


def _unwritable(folder, how: str) -> None:
    """Spoil the headers of ``folder``'s series: ``no_frame``, ``half_no_frame`` (FrameOfReferenceUID
    deleted from every slice, from 3 of 6), ``two_studies`` (one slice of another study: highdicom refuses)."""
    from pydicom.uid import generate_uid

    files = sorted(folder.glob("*.dcm"))
    for n, f in enumerate(files):
        ds = pydicom.dcmread(f)
        if how == "no_frame" or (how == "half_no_frame" and n % 2):
            del ds.FrameOfReferenceUID
        elif how == "two_studies" and n == 2:
            ds.StudyInstanceUID = generate_uid()
        ds.save_as(f)


@pytest.mark.parametrize(
    "how, reason",
    [
        ("no_frame", "its slices have no FrameOfReferenceUID (0020,0052)"),
        ("half_no_frame", "3 of its 6 slices have no FrameOfReferenceUID (0020,0052)"),
        ("two_studies", "highdicom: Source images must all be part of the same series"),
        ("off_grid", "slice 1 of the source series does not lie on the mask's grid"),
    ],
)
def test_a_series_no_seg_can_be_made_over_is_named_with_the_reason(tmp_path, make_dicom_series, how, reason):
    from amt_core.data.dicom_seg import SegNotWritable

    hu = np.full((24, 20, 6), -1000.0)
    hu[4:20, 4:16] = 40.0
    folder = make_dicom_series(tmp_path / "CT9", hu, spacing=(2.0, 2.0, 3.0))
    image = read_volume(folder)
    _unwritable(folder, how)
    affine = image.affine.copy()
    if how == "off_grid":
        affine[:3, 3] += 0.5  # half a voxel off
    with pytest.raises(SegNotWritable) as caught:
        write_dicom_seg(Volume(_asymmetric_mask(image.shape), affine), folder, tmp_path / "CT9_seg.dcm")
    assert caught.value.reason.startswith(reason) and len(str(caught.value).splitlines()) == 1
    assert str(caught.value).startswith(f"{folder}: no DICOM-SEG can be made over this series: {reason}")
    assert not (tmp_path / "CT9_seg.dcm").exists() and list(tmp_path.iterdir()) == [folder]
