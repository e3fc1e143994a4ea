"""Write a predicted tumour mask as a DICOM-SEG over its source CT series (highdicom), so 3D Slicer, OHIF or a
PACS shows it over the CT.

The SEG is a new series in the source's study: it references every source slice (frame of reference, series
and SOP instances) and describes one segment, "tumour" (SNOMED CT: morphologically abnormal structure /
neoplasm), made by the AUTOMATIC algorithm "amt" of this package's version.

Identifiers: a SEG must belong to its study, so highdicom copies the Patient and General Study modules of the
source (PatientName, PatientID, PatientBirthDate, PatientSex, PatientAge, StudyInstanceUID, StudyDate,
StudyTime, StudyID, AccessionNumber, ReferringPhysicianName) and the referenced UIDs. Nothing else of the
source is copied: no other patient attribute, institution, station, operator or device serial number (the
SEG's equipment is "amt"); :func:`write_dicom_seg` removes what highdicom copies beyond that list. The SEG thus carries no identifier
the source series did not; de-identify the source first to get a de-identified SEG.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from amt_core.data.volume import Volume, VolumeError, select_series

#: attributes of the source a SEG copies (Patient and General Study modules); all others are the SEG's own
COPIED_FROM_SOURCE: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip
SEGMENT_LABEL = "tumour"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class SegNotWritable(ValueError):
    """A DICOM-SEG cannot be made over this series (its headers lack what a SEG must reference, or highdicom
    refuses them); ``reason`` says why, the message names the series folder too. Nothing was written."""

    def __init__(self, folder, reason: str):
        self.folder, self.reason = str(folder), reason
        super().__init__(f"{folder}: no DICOM-SEG can be made over this series: {reason}")


def series_datasets(folder: str | os.PathLike, series_uid: str | None = None) -> list:
    """The headers (no pixels) of the series :func:`~amt_core.data.volume.read_volume` reads in ``folder``."""
    import pydicom

    return [pydicom.dcmread(f, stop_before_pixels=True) for f in select_series(folder, series_uid).files]


def frames_from_mask(mask: Volume | np.ndarray, affine: np.ndarray | None, sources: list) -> np.ndarray:
    """(n_sources, rows, columns) bool: the mask (on a RAS grid) sampled at every pixel of each source slice,
    by world position. Every source pixel must fall on a mask voxel, else a VolumeError."""
    array = mask.array if isinstance(mask, Volume) else np.asarray(mask)
    affine = mask.affine if isinstance(mask, Volume) else affine
    to_voxel = np.linalg.inv(affine)
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), bool)
    for n, ds in enumerate(sources):
        origin = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        row_dir, col_dir = np.asarray(ds.ImageOrientationPatient, dtype=np.float64).reshape(2, 3)
        d_row, d_col = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
        # pixel (r, c) -> LPS: origin + c * d_col * row_dir + r * d_row * col_dir
        pixel_to_lps = np.column_stack([col_dir * d_row, row_dir * d_col, origin])
        pixel_to_voxel = to_voxel[:3, :3] @ (_LPS_TO_RAS[:3, :3] @ pixel_to_lps)
        pixel_to_voxel[:, 2] += to_voxel[:3, 3]
        r, c = np.meshgrid(np.arange(int(ds.Rows)), np.arange(int(ds.Columns)), indexing="ij")
        ijk = pixel_to_voxel @ np.stack([r.ravel(), c.ravel(), np.ones(r.size)])
        index = np.round(ijk).astype(np.int64)
        if np.abs(ijk - index).max() > 0.05 or index.min() < 0 or np.any(index.max(axis=1) >= array.shape):
            raise VolumeError(f"slice {n + 1} of the source series does not lie on the mask's grid")
        frames[n] = array[tuple(index)].reshape(r.shape) != 0
    return frames


def write_dicom_seg(
    mask: Volume,
    source_folder: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    series_uid: str | None = None,
    series_number: int = 9901,
) -> Path:
    """Write ``mask`` (binary, on the RAS grid of the series in ``source_folder`` as read by ``read_volume``)
    as a DICOM-SEG referencing that series; atomic. Returns ``out_path``.

    Raises :class:`SegNotWritable` (nothing written) when the series' headers cannot be referenced by a SEG:
    slices without FrameOfReferenceUID (some anonymised exports drop it; a SEG must share its source's frame
    of reference), slices not on the mask's grid, or anything else highdicom refuses in them."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from amt_core import __version__
    from amt_core.atomic import atomic_path

    sources = series_datasets(source_folder, series_uid)
    lacking = sum(not str(ds.get("FrameOfReferenceUID", "")).strip() for ds in sources)
    if lacking:
        which = (
            "its slices have" if lacking == len(sources) else f"{lacking} of its {len(sources)} slices have"
        )
        raise SegNotWritable(
            source_folder,
            f"{which} no FrameOfReferenceUID (0020,0052), which a DICOM-SEG must share with its source "
            "(dropped by some anonymisers)",
        )
    for ds in sources:
        # an emptied SOPClassUID/SOPInstanceUID (seen in real exports): the file meta header still has them
        for keyword, meta in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if not str(ds.get(keyword, "")).strip() and str(ds.file_meta.get(meta, "")).strip():
                setattr(ds, keyword, ds.file_meta.get(meta))
        # Type 2 attributes highdicom copies: present (empty) even where the source lacks them
        for keyword in (
            "StudyDate",
            "StudyTime",
            "StudyID",
            "AccessionNumber",
            "ReferringPhysicianName",
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
        ):
            if keyword not in ds:
                setattr(ds, keyword, None)
    try:
        frames = frames_from_mask(mask, None, sources)
    except VolumeError as exc:
        raise SegNotWritable(source_folder, str(exc)) from None
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="amt", version=__version__, family=codes.cid7162.ArtificialIntelligence
        ),
    )
    with warnings.catch_warnings():  # highdicom's advice on single-component PatientNames ("Anonymous") is
        warnings.filterwarnings(
            "ignore", message=".*unlikely to represent the intended person name"
        )  # not ours
        try:
            seg = _segmentation(hd, sources, frames, description, series_number)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:  # on the series' headers
            first = str(exc).strip().splitlines()
            raise SegNotWritable(
                source_folder, f"highdicom: {first[0] if first else type(exc).__name__}"
            ) from exc
    _drop_other_identifiers(seg)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return out_path


def _segmentation(hd, sources, frames, description, series_number):
    from amt_core import __version__

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="amt",
        manufacturer_model_name="amt",
        software_versions=__version__,
        device_serial_number="0",
        series_description="amt tumour segmentation",
        content_label="TUMOUR",
        omit_empty_frames=False,  # a viewer shows "no tumour" on every slice, not a missing frame
    )


def _drop_other_identifiers(seg) -> None:
    """Keep of the source's identifying attributes only ``COPIED_FROM_SOURCE``: highdicom also copies the rest
    of the Patient module (e.g. PatientBirthTime, PatientComments, OtherPatientIDs) and records the source's
    equipment (ContributingEquipmentSequence: manufacturer, institution, station); a SEG needs none of them."""
    from amt_core.data.privacy import IDENTIFYING_TAGS

    own = {
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "ContentDate",
        "ContentTime",
        "SeriesDate",
        "SeriesTime",
        "DeviceSerialNumber",
    }  # the SEG's own values
    for keyword in (
        "ContributingEquipmentSequence",
        *(k for k in IDENTIFYING_TAGS if k not in COPIED_FROM_SOURCE and k not in own),
    ):
        if keyword in seg:
            delattr(seg, keyword)
