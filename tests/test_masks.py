"""Reference masks as clinicians export them (DICOM-SEG, RTSTRUCT, 3D Slicer .seg.nrrd), read onto the image's
RAS grid. Every fixture is written here with the real libraries (highdicom, pydicom, slicerio) over a synthetic
pydicom series, and again over the real DICOM series of ../shared/realdata where it is present. Orientation is
checked against world positions computed from the DICOM header, not against the reader's own arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from amt_core.data.masks import read_mask
from amt_core.data.volume import VolumeError, dicom_series, read_volume


def _series(folder) -> list:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_series(folder)[0].files]


def _pixel_world_ras(ds, row: int, col: int) -> np.ndarray:
    """World position (RAS mm) of pixel (row, col) of a DICOM slice, from its header alone (PS3.3 C.7.6.2.1.1)."""
    origin = np.asarray(ds.ImagePositionPatient, float)
    row_dir, col_dir = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
    d_row, d_col = (float(v) for v in ds.PixelSpacing)
    lps = origin + col * d_col * row_dir + row * d_row * col_dir
    return lps * np.array([-1.0, -1.0, 1.0])


def _voxel_world(image, ijk) -> np.ndarray:
    return (image.affine @ np.append(np.asarray(ijk, float), 1.0))[:3]


def write_seg(
    path, sources, frames: dict[str, np.ndarray], frame_of_reference=None, fractional=False
) -> Path:
    """A DICOM-SEG (highdicom) with one segment per name; frames[name] is (n_sources, rows, columns) bool in
    the order of ``sources``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [pydicom.Dataset(ds) for ds in sources]
    for ds in sources:
        ds.StudyTime = ds.get("StudyTime", "")
        if frame_of_reference:
            ds.FrameOfReferenceUID = frame_of_reference
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=name, segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n, name in enumerate(frames, start=1)]  # fmt: skip
    pixels = np.stack([frames[name] for name in frames], axis=-1)
    pixels = pixels.astype(np.float32 if fractional else np.uint8)
    kind = hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=kind,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=5,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")  # fmt: skip
    seg.save_as(path)
    return Path(path)


def write_rtstruct(path, sources, rois: dict[str, list[np.ndarray]], frame_of_reference=None) -> Path:
    """An RT Structure Set (pydicom) referencing the series of ``sources``; rois[name] is a list of closed
    planar contours, each an (n, 3) array of LPS points in mm."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    first = sources[0]
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = (
        "1.2.840.10008.5.1.4.1.1.481.3",
        ds.file_meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        "RTSTRUCT",
        first.StudyInstanceUID,
        generate_uid(),
    )
    ds.StructureSetLabel = "test"
    frame = frame_of_reference or first.FrameOfReferenceUID
    series = pydicom.Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = [pydicom.Dataset() for _ in sources]
    for item, src in zip(series.ContourImageSequence, sources, strict=True):
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
    study = pydicom.Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    ref_frame = pydicom.Dataset()
    ref_frame.FrameOfReferenceUID = frame
    ref_frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [ref_frame]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = pydicom.Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        roi_contour = pydicom.Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = [255, 0, 0]
        roi_contour.ContourSequence = []
        for points in contours:
            c = pydicom.Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(points)
            c.ContourData = [f"{v:.4f}" for v in np.asarray(points, float).ravel()]
            roi_contour.ContourSequence.append(c)
        ds.ROIContourSequence.append(roi_contour)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def _pixel_square(ds, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """LPS contour around pixels rows[0]..rows[1] x cols[0]..cols[1] of slice ``ds`` (on the pixel edges)."""
    origin = np.asarray(ds.ImagePositionPatient, float)
    row_dir, col_dir = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
    d_row, d_col = (float(v) for v in ds.PixelSpacing)
    r0, r1, c0, c1 = rows[0] - 0.5, rows[1] + 0.5, cols[0] - 0.5, cols[1] + 0.5
    return np.array([origin + c * d_col * row_dir + r * d_row * col_dir
                     for r, c in ((r0, c0), (r0, c1), (r1, c1), (r1, c0))])  # fmt: skip


@pytest.fixture
def synthetic_series(tmp_path, make_dicom_series):
    hu = np.full((14, 11, 7), -1000.0)
    hu[3:10, 2:8, 1:6] = 40.0
    return make_dicom_series(tmp_path / "ct", hu)


@pytest.fixture(params=["synthetic", "cip_thorax_lowres/dicom", "itkelastix_thorax/dicom_subset"])
def series(request, synthetic_series):
    """A synthetic series, and real ones (LPS storage flipped to RAS; native 512x512 slices)."""
    if request.param == "synthetic":
        return synthetic_series
    return request.getfixturevalue("realdata") / request.param


# --- DICOM-SEG ------------------------------------------------------------------------------------------------


def test_dicom_seg_voxels_land_on_their_world_positions(series, tmp_path):
    """An asymmetric SEG (one lone pixel, an L-shaped block) written per source slice lands on the image voxels
    at the same world positions; the other segment is ignored."""
    sources = _series(series)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    tumour = np.zeros((len(sources), rows, cols), bool)
    lone = (1, rows // 3, cols // 4)
    tumour[lone] = True
    tumour[len(sources) - 2, 2:5, 6:8] = True
    tumour[len(sources) - 2, 2, 8] = True
    other = np.zeros_like(tumour)
    other[0, 0, 0] = True
    seg = write_seg(tmp_path / "mask.dcm", sources, {"Heart": other, "Thymoma": tumour})
    image = read_volume(series)
    mask = read_mask(seg, image, segment="thymoma")  # by name, case-insensitively
    assert mask.array.dtype == np.uint8 and mask.array.shape == image.shape
    assert int(mask.array.sum()) == int(tumour.sum()) == 8
    got = {tuple(np.round(_voxel_world(image, v), 3)) for v in np.argwhere(mask.array)}
    want = {tuple(np.round(_pixel_world_ras(sources[k], r, c), 3)) for k, r, c in np.argwhere(tumour)}
    assert got == want


def test_fractional_dicom_seg_is_tumour_from_one_half(synthetic_series, tmp_path):
    sources = _series(synthetic_series)
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), np.float32)
    frames[2, 3, 3], frames[2, 3, 4], frames[3, 5, 5] = 0.3, 0.8, 1.0
    seg = write_seg(tmp_path / "frac.dcm", sources, {"tumour": frames}, fractional=True)
    image = read_volume(synthetic_series)
    got = {tuple(np.round(_voxel_world(image, v), 3)) for v in np.argwhere(read_mask(seg, image).array)}
    assert got == {
        tuple(np.round(_pixel_world_ras(sources[k], r, c), 3)) for k, r, c in ((2, 3, 4), (3, 5, 5))
    }


def test_dicom_seg_segment_choice_errors(synthetic_series, tmp_path):
    sources = _series(synthetic_series)
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), bool)
    frames[2, 3, 3] = True
    seg = write_seg(tmp_path / "mask.dcm", sources, {"Heart": frames, "Thymoma": frames})
    image = read_volume(synthetic_series)
    with pytest.raises(VolumeError, match=r"no segment named 'tumour'; available: 'Heart', 'Thymoma'"):
        read_mask(seg, image, segment="tumour")
    with pytest.raises(VolumeError, match=r"holds 2 segments \('Heart', 'Thymoma'\); name the tumour"):
        read_mask(seg, image)


def test_dicom_seg_of_another_series_is_refused(synthetic_series, tmp_path, make_dicom_series):
    """Same geometry, another scan: the frame of reference differs and the error names both files and UIDs."""
    other = make_dicom_series(tmp_path / "other", np.full((14, 11, 7), -1000.0))
    sources = _series(other)
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), bool)
    frames[2, 3, 3] = True
    seg = write_seg(tmp_path / "mask.dcm", sources, {"tumour": frames})
    image = read_volume(synthetic_series)
    with pytest.raises(VolumeError) as info:
        read_mask(seg, image)
    message = str(info.value)
    assert (
        "another frame of reference" in message and str(seg) in message and str(synthetic_series) in message
    )
    assert (
        sources[0].FrameOfReferenceUID in message
        and _series(synthetic_series)[0].FrameOfReferenceUID in message
    )


def test_dicom_seg_on_another_grid_is_refused(tmp_path, make_dicom_series):
    """A SEG of a series shifted by half a voxel, over the scan as NIfTI (no UIDs to compare): another grid,
    and the error names both files."""
    from amt_core.data.volume import write_volume

    hu = np.full((14, 11, 7), -1000.0)
    hu[3:10, 2:8, 1:6] = 40.0
    ct = read_volume(make_dicom_series(tmp_path / "ct", hu))
    write_volume(ct.array, ct.affine, tmp_path / "ct.nii.gz")
    sources = _series(make_dicom_series(tmp_path / "shifted", hu, origin=(-19.6, -30.0, 100.0)))
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), bool)
    frames[2, 3, 3] = True
    seg = write_seg(tmp_path / "mask.dcm", sources, {"tumour": frames})
    pattern = (
        r"mask .*mask.dcm is not on the grid of image .*ct.nii.gz: .*export the mask on the image's grid"
    )
    with pytest.raises(VolumeError, match=pattern):
        read_mask(seg, read_volume(tmp_path / "ct.nii.gz"))
    unshifted = _series(tmp_path / "ct")  # the same SEG over the right series is accepted (the test can fail)
    assert read_mask(write_seg(tmp_path / "ok.dcm", unshifted, {"tumour": frames}), ct).array.sum() == 1


def test_dicom_seg_of_another_series_in_the_same_frame_is_refused(
    synthetic_series, tmp_path, make_dicom_series
):
    hu = np.full((14, 11, 7), -1000.0)
    sources = _series(make_dicom_series(tmp_path / "other", hu))
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), bool)
    frames[2, 3, 3] = True
    frame = _series(synthetic_series)[0].FrameOfReferenceUID
    seg = write_seg(tmp_path / "mask.dcm", sources, {"tumour": frames}, frame_of_reference=frame)
    with pytest.raises(
        VolumeError,
        match=r"mask .*mask.dcm references another series than image .*ct "
        r"\(SeriesInstanceUID [0-9.]+ vs [0-9.]+\)",
    ):
        read_mask(seg, read_volume(synthetic_series))


# --- RTSTRUCT ---------------------------------------------------------------------------------------------------


def test_rtstruct_contours_fill_their_pixels(series, tmp_path):
    """A 3x2-pixel square on one slice, a 5x5 square with a 1-pixel hole on another: exactly those pixels, at
    their world positions; ROI chosen by name among two."""
    sources = _series(series)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    a, b = 1, len(sources) - 2
    r, c = rows // 3, cols // 4
    contours = [_pixel_square(sources[a], (r, r + 2), (c, c + 1)),
                _pixel_square(sources[b], (r, r + 4), (c, c + 4)), _pixel_square(sources[b], (r + 2, r + 2), (c + 1, c + 1))]  # fmt: skip
    rt = write_rtstruct(tmp_path / "rs.dcm", sources, {"Body": [_pixel_square(sources[0], (0, 1), (0, 1))],
                                                       "GTV": contours})  # fmt: skip
    image = read_volume(series)
    mask = read_mask(rt, image, segment="GTV")
    want = {(a, rr, cc) for rr in range(r, r + 3) for cc in range(c, c + 2)}
    want |= {(b, rr, cc) for rr in range(r, r + 5) for cc in range(c, c + 5)} - {(b, r + 2, c + 1)}
    assert int(mask.array.sum()) == len(want) == 6 + 24
    got = {tuple(np.round(_voxel_world(image, v), 3)) for v in np.argwhere(mask.array)}
    assert got == {tuple(np.round(_pixel_world_ras(sources[k], rr, cc), 3)) for k, rr, cc in want}


def test_rtstruct_contour_through_pixel_centres_includes_them(synthetic_series, tmp_path):
    """Contours traced through the centres of the boundary pixels (as tools export masks) keep those pixels,
    whatever the winding."""
    sources = _series(synthetic_series)
    image = read_volume(synthetic_series)
    for winding in (1, -1):
        square = _pixel_square(sources[3], (3.5, 3.5), (4.5, 5.5))[
            ::winding
        ]  # through centres rows 3..4, cols 4..6
        rt = write_rtstruct(tmp_path / f"rs{winding}.dcm", sources, {"GTV": [square]})
        got = {tuple(np.round(_voxel_world(image, v), 3)) for v in np.argwhere(read_mask(rt, image).array)}
        want = {tuple(np.round(_pixel_world_ras(sources[3], r, c), 3)) for r in (3, 4) for c in (4, 5, 6)}
        assert got == want


def test_rtstruct_errors_name_the_rois_and_both_series(synthetic_series, tmp_path, make_dicom_series):
    sources = _series(synthetic_series)
    rt = write_rtstruct(
        tmp_path / "rs.dcm",
        sources,
        {
            "Body": [_pixel_square(sources[0], (0, 1), (0, 1))],
            "GTV": [_pixel_square(sources[1], (2, 3), (2, 3))],
        },
    )
    image = read_volume(synthetic_series)
    with pytest.raises(VolumeError, match=r"no ROI named 'Tumour'; available: 'Body', 'GTV'"):
        read_mask(rt, image, segment="Tumour")
    other = _series(make_dicom_series(tmp_path / "other", np.full((14, 11, 7), -1000.0)))
    rt_other = write_rtstruct(tmp_path / "rs2.dcm", other, {"GTV": [_pixel_square(other[1], (2, 3), (2, 3))]})
    with pytest.raises(VolumeError, match=r"another frame of reference than image .*FrameOfReferenceUID"):
        read_mask(rt_other, image)


# --- 3D Slicer .seg.nrrd ---------------------------------------------------------------------------------------


def test_slicer_seg_nrrd_cropped_segment_lands_on_its_world_position(series, tmp_path):
    """A Slicer segmentation stored cropped (origin moved by a whole number of voxels, LPS axes): its voxels land
    at the same world positions in the image."""
    import slicerio

    image = read_volume(series)
    offset = np.array([2, 1, 1])
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    ijk_to_lps[:3, 3] = (ijk_to_lps @ np.append(offset, 1.0))[:3]  # the crop's first voxel
    shape = tuple(np.array(image.shape) - offset - 1)
    seg = slicerio.create_segmentation(shape, ijk_to_lps)
    tumour = np.zeros(shape, bool)
    tumour[3, 4, 2] = tumour[3, 5, 2] = tumour[4, 4, 3] = True
    heart = np.zeros(shape, bool)
    heart[0, 0, 0] = True
    slicerio.add_segment(seg, heart, {"id": "s1", "name": "heart"})
    slicerio.add_segment(seg, tumour, {"id": "s2", "name": "Tumour"})
    path = tmp_path / "mask.seg.nrrd"
    slicerio.write_segmentation(str(path), seg)
    mask = read_mask(path, image, segment="Tumour")
    got = {tuple(np.round(_voxel_world(image, v), 3)) for v in np.argwhere(mask.array)}
    want = {tuple(np.round(ijk_to_lps[:3, :3] @ v + ijk_to_lps[:3, 3], 3) * np.array([-1, -1, 1]))
            for v in np.argwhere(tumour)}  # fmt: skip
    assert int(mask.array.sum()) == 3 and got == {tuple(np.round(w, 3)) for w in want}
    with pytest.raises(VolumeError, match=r"no segment named 'GTV'; available: 'heart', 'Tumour'"):
        read_mask(path, image, segment="GTV")


def test_segment_name_for_a_plain_label_is_an_error(tmp_path):
    from amt_core.data.volume import Volume, write_volume

    image = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), "img.nii.gz")
    write_volume(np.zeros((4, 4, 4), np.uint8), np.eye(4), tmp_path / "l.nii.gz")
    with pytest.raises(
        VolumeError, match=r"a segment name \('GTV'\) is given but a NIfTI/NRRD label has no segments"
    ):
        read_mask(tmp_path / "l.nii.gz", image, segment="GTV")


# --- amt import with clinical masks ------------------------------------------------------------------------------


def test_import_takes_seg_rtstruct_and_slicer_masks_and_reports_all_problems(
    tmp_path, make_dicom_series, dicom_identity
):
    """Three DICOM cases, one per mask format, land in the cohort as the expected binary NIfTI labels; a bad
    segment name in two rows is reported for both at once and nothing is written."""
    import gzip

    import slicerio

    from amt_core.data.cases import CaseTableError
    from amt_core.data.importer import import_cohort

    src = tmp_path / "src"
    hu = np.full((14, 11, 7), -1000.0)
    hu[3:10, 2:8, 1:6] = 40.0
    rows, expected = [], {}
    for name in ("seg", "rt", "slicer"):
        folder = make_dicom_series(src / name, hu)
        sources, image = _series(folder), read_volume(folder)
        if name == "seg":
            frames = np.zeros((len(sources), 11, 14), bool)
            frames[2, 4, 5] = frames[3, 4, 5:7] = True
            write_seg(src / "seg.dcm", sources, {"Heart": frames[::-1], "GTV": frames})
            mask = "seg.dcm"
        elif name == "rt":
            write_rtstruct(src / "rs.dcm", sources, {"GTV": [_pixel_square(sources[3], (4, 5), (5, 6))]})
            mask = "rs.dcm"
        else:
            seg = slicerio.create_segmentation(image.shape, np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine)
            voxels = np.zeros(image.shape, bool)
            voxels[5, 4, 3] = voxels[6, 4, 3] = True
            slicerio.add_segment(seg, voxels, {"id": "a", "name": "GTV"})
            slicerio.write_segmentation(str(src / "m.seg.nrrd"), seg)
            mask = "m.seg.nrrd"
        expected[name] = read_mask(src / mask, image, segment="GTV").array
        rows.append(
            {
                "case_id": name,
                "patient_id": f"p_{name}",
                "image": name,
                "label": mask,
                "label_segment": "GTV",
                "split": "train",
                "institution": "H",
            }
        )
    assert [int(v.sum()) for v in expected.values()] == [3, 4, 2]
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    df = import_cohort(src, tmp_path / "meta.csv", tmp_path / "cohort", key="k")
    for _, row in df.iterrows():
        label = read_volume(row["label"])
        assert np.array_equal(label.array, expected[row["case_id"]])
        assert row["tumour_volume_ml"] > 0
    files = [f for f in (tmp_path / "cohort").rglob("*") if f.is_file()]
    written = b"".join(
        gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes() for f in files
    )
    for value in dicom_identity.values():  # the masks' DICOM files carry them too; none reaches the cohort
        assert value.encode() not in written, value
    rows[0]["label_segment"] = rows[1]["label_segment"] = "Tumour"
    pd.DataFrame(rows).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(CaseTableError) as info:
        import_cohort(src, tmp_path / "bad.csv", tmp_path / "cohort2", key="k")
    message = str(info.value)
    assert "case seg: " in message and "no segment named 'Tumour'; available: 'Heart', 'GTV'" in message
    assert "case rt: " in message and "no ROI named 'Tumour'; available: 'GTV'" in message
    assert not (tmp_path / "cohort2").exists()
