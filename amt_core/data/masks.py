"""Read a tumour mask in the formats clinicians export, as a binary uint8 mask on an image's RAS grid.

- NIfTI / NRRD label volumes (:func:`amt_core.data.volume.read_label`: binary, on the image's grid);
- DICOM-SEG (read with highdicom); the segment is chosen by its SegmentLabel;
- DICOM RTSTRUCT: the ROI's planar contours (world mm, LPS) are filled on the image's slices, a voxel being
  inside when its centre is inside or on the contour (several contours on one slice combine even-odd, so a
  contour inside another is a hole); the ROI is chosen by its ROIName;
- a 3D Slicer segmentation ``.seg.nrrd`` (read with slicerio); the segment is chosen by its name.

A DICOM mask whose FrameOfReferenceUID or referenced SeriesInstanceUID is not that of the image series is an
error naming both files and both UIDs (raised to the user, never written; see :mod:`amt_core.data.privacy`).
A mask whose voxels do not fall on the image's voxels (another grid) is an error naming both files. A mask
may cover only part of the image (DICOM-SEG without its empty frames, a cropped ``.seg.nrrd``); it is
placed by world position, so a voxel set in the source lands on the same world position in the result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amt_core.data.volume import NIFTI_SUFFIXES, Volume, VolumeError, read_label, select_series

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: largest distance (in voxels) between a mask voxel and the image voxel it is put on
GRID_TOLERANCE_VOXELS = 0.05
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class SeriesRefs:
    """What a DICOM mask must reference: the image series' UIDs (read, compared, never written)."""

    series_uid: str | None
    frame_of_reference_uid: str | None
    sop_instance_uids: frozenset[str]


def mask_kind(path: str | os.PathLike) -> str:
    """'seg.nrrd', 'volume' (NIfTI/NRRD), 'dicom-seg' or 'rtstruct' (from SOPClassUID or Modality)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".seg.nrrd"):
        return "seg.nrrd"
    if name.endswith((*NIFTI_SUFFIXES, ".nrrd", ".nhdr", ".mha", ".mhd")):
        return "volume"
    header = _dicom_header(p)
    sop_class = str(header.get("SOPClassUID", ""))
    modality = str(header.get("Modality", "")).upper()
    if sop_class == SEG_SOP_CLASS or modality == "SEG":
        return "dicom-seg"
    if sop_class == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "rtstruct"
    raise VolumeError(
        f"{p}: a DICOM {modality or 'file'} is not a mask (expected a DICOM-SEG or an RTSTRUCT)"
    )


def read_mask(
    path: str | os.PathLike,
    image: Volume,
    *,
    segment: str | None = None,
    series_uid: str | None = None,
    binarise: bool = False,
) -> Volume:
    """The mask at ``path`` (any format above) as a binary uint8 :class:`Volume` on ``image``'s grid.

    ``segment`` names the DICOM-SEG segment, RTSTRUCT ROI or Slicer segment (required when the file holds
    several: the error lists them). ``series_uid`` is the image series' SeriesInstanceUID when ``image``
    was read from a folder holding several series. ``binarise`` turns any non-zero value of a NIfTI/NRRD
    label volume into 1 (else it must be binary)."""
    p = Path(path)
    if p.is_dir():
        p = _single_mask_file(p)
    kind = mask_kind(p)
    if kind == "volume":
        if segment is not None:
            raise VolumeError(
                f"{p}: a segment name ({segment!r}) is given but a NIfTI/NRRD label has no segments"
            )
        label = read_label(p, image, allowed=None if binarise else (0, 1))
        return Volume(array=(label.array > 0).astype(np.uint8), affine=image.affine, source=str(p))
    if kind == "seg.nrrd":
        array, ras_affine = _read_slicer(p, segment)
    elif kind == "dicom-seg":
        array, ras_affine = _read_dicom_seg(p, segment, image, _image_refs(image, series_uid))
    else:
        return Volume(
            array=_read_rtstruct(p, segment, image, _image_refs(image, series_uid)),
            affine=image.affine,
            source=str(p),
        )
    return Volume(array=place_on_grid(array, ras_affine, image, str(p)), affine=image.affine, source=str(p))


def place_on_grid(array: np.ndarray, ras_affine: np.ndarray, image: Volume, source: str) -> np.ndarray:
    """Put the non-zero voxels of ``array`` (voxel -> RAS world ``ras_affine``) on ``image``'s grid: each must
    fall on an image voxel (within ``GRID_TOLERANCE_VOXELS``), else the error names both files."""
    to_image = np.linalg.inv(image.affine) @ ras_affine
    rotation, shift = to_image[:3, :3], to_image[:3, 3]
    exact_rotation, exact_shift = np.round(rotation), np.round(shift)
    ok = (np.allclose(rotation, exact_rotation, atol=GRID_TOLERANCE_VOXELS / max(array.shape), rtol=0)
          and np.allclose(np.abs(exact_rotation).sum(axis=0), 1) and np.allclose(np.abs(exact_rotation).sum(axis=1), 1)
          and np.allclose(shift, exact_shift, atol=GRID_TOLERANCE_VOXELS, rtol=0))  # fmt: skip
    if not ok:
        mask_spacing = np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0))
        raise VolumeError(
            f"mask {source} is not on the grid of image {image.source}: its voxels ({_fmt(mask_spacing)} mm, "
            f"origin {_fmt(ras_affine[:3, 3])}) do not fall on the image's ({_fmt(image.spacing)} mm, origin "
            f"{_fmt(image.affine[:3, 3])}); export the mask on the image's grid"
        )
    ijk = np.argwhere(array != 0).T
    out = np.zeros(image.shape, np.uint8)
    if ijk.size == 0:
        return out
    target = (exact_rotation @ ijk + exact_shift[:, None]).astype(np.int64)
    outside = np.any((target < 0) | (target >= np.array(image.shape)[:, None]), axis=0)
    if outside.any():
        raise VolumeError(
            f"mask {source}: {int(outside.sum())} tumour voxel(s) lie outside image {image.source} "
            f"(shape {image.shape}); is it the mask of another scan?"
        )
    out[tuple(target)] = 1
    return out


# --- DICOM --------------------------------------------------------------------------------------------------


def _dicom_header(p: Path):
    import pydicom

    try:
        return pydicom.dcmread(p, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise VolumeError(
            f"{p}: unknown mask format (expected .nii/.nii.gz/.nrrd, .seg.nrrd, a DICOM-SEG or an "
            f"RTSTRUCT): {' '.join(str(exc).split())[:200]}"
        ) from None


def _single_mask_file(folder: Path) -> Path:
    """A folder given as a mask must hold exactly one DICOM-SEG or RTSTRUCT file."""
    found = []
    for f in sorted(x for x in folder.rglob("*") if x.is_file() and not x.name.startswith(".")):
        try:
            if mask_kind(f) in ("dicom-seg", "rtstruct"):
                found.append(f)
        except VolumeError:
            continue
    if len(found) != 1:
        what = (
            "no DICOM-SEG or RTSTRUCT file"
            if not found
            else f"{len(found)} mask files ({', '.join(f.name for f in found)})"
        )
        raise VolumeError(f"{folder}: {what} in this folder; name the mask file in the label column")
    return found[0]


def _image_refs(image: Volume, series_uid: str | None) -> SeriesRefs | None:
    """The UIDs of the DICOM series ``image`` was read from (None when it was not a DICOM folder)."""
    import pydicom

    folder = Path(image.source)
    if not folder.is_dir():
        return None
    files = select_series(folder, series_uid).files
    series = frame = None
    uids = set()
    for f in files:
        ds = pydicom.dcmread(
            f,
            stop_before_pixels=True,
            specific_tags=["SOPInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"],
        )
        uids.add(str(ds.get("SOPInstanceUID", "")))
        series = series or str(ds.get("SeriesInstanceUID", "")) or None
        frame = frame or str(ds.get("FrameOfReferenceUID", "")) or None
    return SeriesRefs(series, frame, frozenset(uids))


def _check_refs(
    p: Path, image_source: str, refs: SeriesRefs | None, frame: str | None, series: set[str]
) -> None:
    if refs is None:
        return
    if frame and refs.frame_of_reference_uid and frame != refs.frame_of_reference_uid:
        raise VolumeError(
            f"mask {p} is in another frame of reference than image {image_source} "
            f"(FrameOfReferenceUID {frame} vs {refs.frame_of_reference_uid}); is it the mask of another scan?"
        )
    if series and refs.series_uid and refs.series_uid not in series:
        raise VolumeError(
            f"mask {p} references another series than image {image_source} "
            f"(SeriesInstanceUID {', '.join(sorted(series))} vs {refs.series_uid})"
        )


def _choose(p: Path, names: list[str], segment: str | None, what: str) -> int:
    """Index of the segment/ROI named ``segment`` (exact, else case-insensitive), or of the only one."""
    listing = ", ".join(repr(n) for n in names) or "none"
    if segment is None:
        if len(names) == 1:
            return 0
        raise VolumeError(
            f"{p}: holds {len(names)} {what}s ({listing}); name the tumour in the label_segment column"
        )
    for match in (lambda n: n == segment, lambda n: n.strip().casefold() == segment.strip().casefold()):
        hits = [i for i, n in enumerate(names) if match(n)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise VolumeError(f"{p}: several {what}s are named {segment!r}; available: {listing}")
    raise VolumeError(f"{p}: no {what} named {segment!r}; available: {listing}")


def _read_dicom_seg(
    p: Path, segment: str | None, image: Volume, refs: SeriesRefs | None
) -> tuple[np.ndarray, np.ndarray]:
    import highdicom as hd

    try:
        seg = hd.seg.segread(p)
    except Exception as exc:  # highdicom raises many types for a malformed SEG: still the file's fault
        raise VolumeError(f"{p}: cannot read the DICOM-SEG: {type(exc).__name__}: {str(exc)[:200]}") from None
    series = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])}
    _check_refs(p, image.source, refs, str(seg.get("FrameOfReferenceUID", "")), series)
    descriptions = list(seg.SegmentSequence)
    k = _choose(p, [str(d.SegmentLabel) for d in descriptions], segment, "segment")
    number = int(descriptions[k].SegmentNumber)
    try:
        volume = seg.get_volume(segment_numbers=[number], combine_segments=False)
    except Exception as exc:
        raise VolumeError(f"{p}: the DICOM-SEG frames do not form a 3D volume: {str(exc)[:200]}") from None
    array = np.asarray(volume.array)
    array = array[..., 0] if array.ndim == 4 else array  # the one segment's channel
    # a FRACTIONAL SEG holds probabilities/occupancy in [0, 1]: the tumour is where it is at least one half
    inside = array >= 0.5 if str(seg.get("SegmentationType", "")).upper() == "FRACTIONAL" else array != 0
    return inside, _LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)


def _read_rtstruct(p: Path, roi: str | None, image: Volume, refs: SeriesRefs | None) -> np.ndarray:
    from matplotlib.path import Path as Polygon

    ds = _dicom_header(p)
    frames = {str(f.get("FrameOfReferenceUID", "")) for f in ds.get("ReferencedFrameOfReferenceSequence", [])}
    series = {
        str(s.SeriesInstanceUID)
        for f in ds.get("ReferencedFrameOfReferenceSequence", [])
        for st in f.get("RTReferencedStudySequence", [])
        for s in st.get("RTReferencedSeriesSequence", [])
    }
    rois = list(ds.get("StructureSetROISequence", []))
    k = _choose(p, [str(r.get("ROIName", "")) for r in rois], roi, "ROI")
    number = int(rois[k].ROINumber)
    roi_frame = str(rois[k].get("ReferencedFrameOfReferenceUID", "")) or (
        frames.pop() if len(frames) == 1 else None
    )
    _check_refs(p, image.source, refs, roi_frame, series)
    contours = [
        c
        for rc in ds.get("ROIContourSequence", [])
        if int(rc.ReferencedROINumber) == number
        for c in rc.get("ContourSequence", [])
    ]
    out = np.zeros(image.shape, np.uint8)
    world_to_voxel = np.linalg.inv(image.affine)
    for c in contours:
        points = np.asarray(c.ContourData, dtype=np.float64).reshape(-1, 3)
        geometric = str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
        if geometric == "POINT" or len(points) < 3:
            continue
        if geometric != "CLOSED_PLANAR":
            raise VolumeError(
                f"{p}: ROI {rois[k].ROIName!r} has a {geometric} contour; only closed planar "
                "contours enclose a volume"
            )
        ras = _LPS_TO_RAS[:3, :3] @ points.T
        ijk = world_to_voxel[:3, :3] @ ras + world_to_voxel[:3, 3:4]
        flat = [a for a in range(3) if np.ptp(ijk[a]) < GRID_TOLERANCE_VOXELS]
        if not flat:
            raise VolumeError(
                f"{p}: a contour of ROI {rois[k].ROIName!r} is not in a slice plane of image "
                f"{image.source} (oblique contours are not supported)"
            )
        axis = flat[-1]
        level = float(ijk[axis].mean())
        index = int(round(level))
        if abs(level - index) > GRID_TOLERANCE_VOXELS or not 0 <= index < image.shape[axis]:
            raise VolumeError(
                f"{p}: a contour of ROI {rois[k].ROIName!r} lies between or outside the slices "
                f"of image {image.source} (at slice position {level:.3f}); is it the mask of another scan?"
            )
        a, b = [d for d in range(3) if d != axis]
        polygon = Polygon(np.stack([ijk[a], ijk[b]], axis=1))
        lo = np.maximum(np.floor(ijk[[a, b]].min(axis=1)).astype(int), 0)
        hi = np.minimum(
            np.ceil(ijk[[a, b]].max(axis=1)).astype(int), [image.shape[a] - 1, image.shape[b] - 1]
        )
        if np.any(hi < lo):
            continue
        ga, gb = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
        centres = np.stack([ga.ravel(), gb.ravel()], axis=1)
        # on the contour counts as inside (contours traced through boundary voxel centres, as exported from
        # masks); matplotlib's radius grows or shrinks the polygon by its winding, so both signs are asked
        inside = polygon.contains_points(centres, radius=1e-6) | polygon.contains_points(
            centres, radius=-1e-6
        )
        inside = inside.reshape(ga.shape)
        plane = [slice(None)] * 3
        plane[axis] = index
        plane[a], plane[b] = slice(lo[0], hi[0] + 1), slice(lo[1], hi[1] + 1)
        out[tuple(plane)] ^= inside.astype(np.uint8)  # even-odd: a contour inside another is a hole
    return out


# --- 3D Slicer ----------------------------------------------------------------------------------------------


def _read_slicer(p: Path, segment: str | None) -> tuple[np.ndarray, np.ndarray]:
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(p))
    except Exception as exc:  # pynrrd/slicerio raise several types for a damaged file
        raise VolumeError(
            f"{p}: cannot read the Slicer segmentation: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    segments = list(seg.get("segments", []))
    k = _choose(p, [str(s.get("name", s.get("id", ""))) for s in segments], segment, "segment")
    mask = slicerio.segment_mask(seg, segments[k])
    if mask.ndim != 3:
        raise VolumeError(f"{p}: expected a 3D segmentation, got shape {mask.shape}")
    return mask, _LPS_TO_RAS @ np.asarray(seg["ijkToLPS"], dtype=np.float64)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
