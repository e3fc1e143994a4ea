"""Read and write CT volumes and label masks in one orientation (RAS+).

Every reader returns a :class:`Volume` whose array axes are x, y, z in RAS+ voxel order (the closest
canonical orientation, ``nibabel.as_closest_canonical`` semantics) and whose affine maps voxel indices to
RAS world millimetres. Images are float32 Hounsfield units (DICOM slope/intercept and NIfTI ``scl_*``
applied); labels are unsigned integers (uint8 whenever the values fit).

Formats: NIfTI (nibabel), NRRD/MetaImage (SimpleITK) and DICOM series folders (SimpleITK/GDCM, JPEG 2000
included). No parser of our own. Every problem is a :class:`VolumeError` that names the file: a gzip stream
is read to its end, so a damaged ``.nii.gz`` fails its CRC check instead of giving wrong voxels, and a folder
holding several DICOM series is refused unless the series to read is named.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from amt_core.atomic import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: binary tumour masks: 0 background, 1 tumour
BINARY_LABELS: tuple[int, ...] = (0, 1)
#: geometry tolerance between a label and its image: how far apart (as a fraction of the image's smallest
#: voxel size) the same voxel may lie in the world under the two affines
GRID_TOLERANCE = 1e-2

#: a CT image has air near -1000 HU and soft tissue near 0: below this minimum, or with a negative maximum,
#: the image is not CT (or not in HU)
CT_MIN_BELOW = -500.0
#: how far outside [0, 1] a floating-point probability may stray (rounding) before the map is refused
PROB_TOLERANCE = 1e-3

#: gzip level of :func:`nifti_gz_bytes` (the synthetic cohort: fast to write, about as small as level 6)
GZIP_LEVEL = 1

# LPS (DICOM/ITK world) <-> RAS (NIfTI/nibabel world): flip x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class VolumeError(ValueError):
    """A volume or label that cannot be used; the message names the file and what is wrong."""


class NotCTError(VolumeError):
    """The image is not a CT in Hounsfield units (or, for the model, too small for the network)."""


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D volume in RAS+ voxel order.

    ``array`` has axes (x, y, z); with the RAS+ affine, world x grows towards the patient's Right,
    y towards Anterior, z towards Superior (DICOM's LPS+ has x and y negated: LPS x = -RAS x). After
    reading, voxel index i grows with x, j with y and k with z (axis codes ('R', 'A', 'S')).
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (x, y, z)."""
        return _spacing(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return cast("tuple[int, int, int]", tuple(int(s) for s in self.array.shape))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        import nibabel as nib

        return tuple(nib.aff2axcodes(self.affine))


@dataclass(frozen=True, eq=False)
class Geometry:
    """The grid of a volume without its voxels, as :func:`read_geometry` reads it from a file's header.

    ``shape`` and ``affine`` are those of the :class:`Volume` the readers return (RAS+ voxel order);
    ``stored_shape`` and ``stored_affine`` are the file's own voxel order, which :func:`to_stored_grid`
    returns an array to (so an output can be written in its input's geometry). A label is checked against
    a Geometry as against a Volume (:func:`read_label`).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    stored_shape: tuple[int, int, int]
    stored_affine: np.ndarray
    source: str = ""

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the RAS+ axes (x, y, z)."""
        return _spacing(self.affine)

    @classmethod
    def of(cls, volume: Volume) -> Geometry:
        """The grid of a volume already read (its file order taken to be the RAS+ order)."""
        return cls(volume.shape, volume.affine, volume.shape, volume.affine, volume.source)


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return cast(
        "tuple[float, float, float]",
        tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))),
    )


# --- reading ---------------------------------------------------------------------------------------------


def read_volume(path: str | os.PathLike, *, series_uid: str | None = None) -> Volume:
    """Read a CT image (NIfTI, NRRD or a DICOM series folder) as float32 HU in RAS+ orientation.

    A DICOM folder must hold one series, or ``series_uid`` names the SeriesInstanceUID to read (else the
    error lists the series present); ``series_uid`` is an error for anything but a DICOM folder.
    """
    array, affine, source = _read_any(path, series_uid=series_uid)
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        n_bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise VolumeError(f"{source}: {n_bad} voxel(s) are NaN or infinite; the image cannot be used")
    return Volume(array=array, affine=affine, source=source)


def read_geometry(
    path: str | os.PathLike, *, volume: Volume | None = None, series_uid: str | None = None
) -> Geometry:
    """The grid of a volume file (RAS+ shape and affine, and the file's own order) from its header only:
    NIfTI (nibabel) and NRRD/MetaImage (SimpleITK). A format without a separate header (a DICOM series: the
    one ``series_uid`` names, as in :func:`read_volume`) is read whole, unless ``volume`` is that series
    already read; so is a file whose header is damaged or not 3D, so that the error is :func:`read_volume`'s,
    naming the file. The voxels are not checked here."""
    p = Path(path)
    name = p.name.lower()
    stored = None
    if p.is_file() and name.endswith(NIFTI_SUFFIXES + ITK_SUFFIXES):
        with contextlib.suppress(
            Exception
        ):  # a damaged header: the full reader names the file and the problem
            stored = _header_grid(p)
    if stored is None or len(stored[0]) != 3 or min(stored[0]) < 2:
        return Geometry.of(volume if volume is not None else read_volume(path, series_uid=series_uid))
    shape, affine = stored
    import nibabel.orientations as nio

    ornt = nio.io_orientation(affine)
    ras_shape = [0, 0, 0]
    for axis, (out_axis, _) in enumerate(ornt):
        ras_shape[int(out_axis)] = shape[axis]
    return Geometry(
        cast("tuple[int, int, int]", tuple(ras_shape)),
        affine @ nio.inv_ornt_aff(ornt, shape),
        cast("tuple[int, int, int]", shape),
        affine,
        str(p),
    )


def _header_grid(p: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, world affine) of a NIfTI or ITK file as stored (trailing singleton axes dropped); RAS world."""
    if p.name.lower().endswith(NIFTI_SUFFIXES):
        img = _load_nifti(p)  # the header only
        shape, affine = tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)
    else:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        with _quiet_itk():
            reader.ReadImageInformation()
        shape = tuple(int(s) for s in reader.GetSize())
        if len(shape) != 3:
            return shape, np.eye(4)
        lps = np.eye(4)
        lps[:3, :3] = np.array(reader.GetDirection()).reshape(3, 3) @ np.diag(reader.GetSpacing())
        lps[:3, 3] = reader.GetOrigin()
        affine = _LPS_TO_RAS @ lps
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape, affine


def to_stored_grid(
    array: np.ndarray, affine: np.ndarray, geometry: Geometry
) -> tuple[np.ndarray, np.ndarray]:
    """Undo the readers' reorientation: an array on ``geometry``'s RAS+ grid (``affine``) back in the file's
    voxel order, with the file's affine. A grid that does not match ``geometry`` is returned unchanged (the
    world positions are the same either way)."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(geometry.stored_affine)  # file axes -> RAS, as the reader applied it
    back = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), ornt)
    out = nio.apply_orientation(array, back)
    if out.shape != tuple(geometry.stored_shape) or not np.allclose(
        affine @ nio.inv_ornt_aff(back, array.shape), geometry.stored_affine, atol=1e-3
    ):
        return array, affine
    return np.ascontiguousarray(out), geometry.stored_affine


def check_ct(volume: Volume | np.ndarray, source: str | None = None) -> None:
    """Raise :class:`NotCTError` unless the intensities are plausible CT Hounsfield units: some air (a voxel
    below ``CT_MIN_BELOW``) and a non-negative maximum (tissue). Refuses 0..1 floats, MR-like ranges with
    no air (e.g. 0..4000) and constant images; the message names the file and the range found."""
    array = volume.array if isinstance(volume, Volume) else np.asarray(volume)
    source = source or (volume.source if isinstance(volume, Volume) else None) or "image"
    lo, hi = float(array.min()), float(array.max())
    if hi < 0 or lo > CT_MIN_BELOW:
        found = f"a constant image (every voxel {lo:.4g})" if lo == hi else f"intensities {lo:.4g}..{hi:.4g}"
        raise NotCTError(
            f"{source}: not a CT in Hounsfield units: {found} (expected air near -1000 HU and tissue above 0)"
        )


def read_label(
    path: str | os.PathLike,
    image: Volume | Geometry,
    allowed: tuple[int, ...] | None = BINARY_LABELS,
    *,
    role: str = "label",
    grid_of: str = "image",
) -> Volume:
    """Read a label mask that belongs to ``image``.

    The mask must be integer valued (a float mask holding 0.5 is an error) and, by default, binary
    (values in ``allowed`` = (0, 1): 0 background, 1 tumour). Pass ``allowed=None`` for a multi-class
    integer mask (any non-negative integers), or a tuple of the values a mask may hold. The mask must lie
    on the image's grid (same shape, spacing and affine within ``GRID_TOLERANCE`` of a voxel); otherwise
    the error names both files. Returned dtype: uint8 when the values fit, else uint16/uint32.
    ``role`` and ``grid_of`` name the two files in messages (e.g. "prediction" on the grid of "reference
    label").
    """
    raw, affine, source = _read_any(path)
    _check_grid(source, raw.shape, affine, image, role=role, grid_of=grid_of)
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)):
            raise VolumeError(f"{source}: {role} has NaN or infinite voxels")
        if not np.array_equal(raw, np.round(raw)):
            raise VolumeError(
                f"{source}: {role} has non-integer values (e.g. {_first_fractional(raw)}); a {role} must be "
                "a binary or integer mask, not a probability map"
            )
    elif raw.dtype.kind not in "iub":
        raise VolumeError(f"{source}: {role} has unsupported voxel type {raw.dtype}")
    values = _distinct_values(raw)
    if values.size and values[0] < 0:
        raise VolumeError(f"{source}: {role} has negative values {values[values < 0][:5].tolist()}")
    if allowed is not None:
        bad = sorted(set(int(v) for v in values) - set(int(a) for a in allowed))
        if bad:
            raise VolumeError(
                f"{source}: {role} has values {bad} outside the allowed {sorted(allowed)} "
                f"(values present: {[int(v) for v in values[:20]]}); a tumour mask must be binary "
                "(0 background, 1 tumour)"
            )
    top = int(values[-1]) if values.size else 0
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16 if top <= 65535 else np.uint32
    return Volume(array=raw.astype(dtype, copy=False), affine=affine, source=source)


def read_probability(
    path: str | os.PathLike,
    image: Volume | Geometry,
    *,
    role: str = "probability map",
    grid_of: str = "label",
) -> Volume:
    """Read a probability map on the grid of ``image`` as float32 in [0, 1].

    Accepted: floating-point values in [0, 1] (within ``PROB_TOLERANCE``, then clipped), which includes
    amt's own maps (uint8 stored with ``scl_slope`` 1/255, scaled by nibabel), and a uint8 file without
    scaling (0..255, divided by 255). Anything else (NaN, negative values, floats above 1, other integer
    types) is an error naming the file, the range found and the voxel type: no map is silently rescaled.
    """
    raw, affine, source = _read_any(path)
    _check_grid(source, raw.shape, affine, image, role=role, grid_of=grid_of)
    if raw.dtype == np.uint8:
        prob = np.multiply(raw, np.float32(1 / 255), dtype=np.float32)
        return Volume(array=prob, affine=affine, source=source)
    expected = "a probability map must be floating point in [0, 1], or uint8 0..255 (read as /255)"
    if raw.dtype.kind != "f":
        lo, hi = (raw.min(), raw.max()) if raw.dtype.kind in "iub" else ("?", "?")
        raise VolumeError(f"{source}: {role} of voxel type {raw.dtype} with values {lo}..{hi}; {expected}")
    prob = raw.astype(np.float32, copy=False)
    n_bad = int(prob.size - np.count_nonzero(np.isfinite(prob)))
    if n_bad:
        raise VolumeError(f"{source}: {role} has {n_bad} NaN or infinite voxel(s); {expected}")
    lo, hi = float(prob.min()), float(prob.max())
    if lo < -PROB_TOLERANCE or hi > 1 + PROB_TOLERANCE:
        stored = _stored_dtype(path, raw.dtype)
        raise VolumeError(f"{source}: {role} values {lo:.6g}..{hi:.6g} (voxel type {stored}); {expected}")
    if lo < 0 or hi > 1:
        prob = np.clip(prob, 0.0, 1.0)
    return Volume(array=prob, affine=affine, source=source)


#: a mask voxel's probability may lie this far below the mask's threshold (uint8 storage in steps of 1/255,
#: float16 storage, ties of an argmax)
PROB_MASK_TIE = 0.01


def check_probability_fits_mask(
    prob: np.ndarray, mask: np.ndarray, threshold: float, prob_source: str, mask_source: str
) -> None:
    """Refuse a probability map that is not the one its mask was thresholded from: every mask voxel must
    have probability >= ``threshold`` (within :data:`PROB_MASK_TIE`). The other direction is not required
    (post-processing drops components of the thresholded map)."""
    inside = mask > 0
    contradict = int(np.count_nonzero(inside & (prob < threshold - PROB_MASK_TIE)))
    if contradict:
        raise VolumeError(
            f"{prob_source}: {contradict} of {int(np.count_nonzero(inside))} voxels of the mask "
            f"{Path(mask_source).name} have tumour probability < {threshold:g} (the mask's threshold): not the "
            "probabilities of that mask (another case, another model, or another voxel order)"
        )


def _stored_dtype(path: str | os.PathLike, read_dtype: np.dtype) -> str:
    """The voxel type as stored in a NIfTI header ("uint8 scaled by scl_slope" when nibabel scaled it)."""
    if not str(path).lower().endswith(NIFTI_SUFFIXES):
        return str(read_dtype)
    img = _load_nifti(path)
    stored = img.get_data_dtype()
    slope, inter = (float(getattr(img.dataobj, name, unit)) for name, unit in (("slope", 1), ("inter", 0)))
    scaled = (slope, inter) != (1.0, 0.0)
    return f"{stored} scaled by scl_slope {slope:g}, scl_inter {inter:g}" if scaled else str(stored)


def _distinct_values(raw: np.ndarray) -> np.ndarray:
    """Sorted distinct voxel values, without copying a column-major (NIfTI) array into C order."""
    flat = raw.ravel(order="K")
    if flat.size and flat.dtype.kind in "iub":
        lo, hi = flat.min(), flat.max()  # a pass each, no copy
        if int(hi) - int(lo) <= 16:  # a mask: test each value in range instead of sorting 10^8 voxels
            inner = [v for v in range(int(lo) + 1, int(hi)) if np.any(flat == v)]
            return np.array(sorted({int(lo), *inner, int(hi)}), dtype=np.int64)
    return np.unique(flat)


def _first_fractional(raw: np.ndarray) -> float:
    frac = raw[raw != np.round(raw)]
    return float(frac.flat[0]) if frac.size else float("nan")


def _check_grid(
    source: str,
    shape: tuple[int, ...],
    affine: np.ndarray,
    image: Volume | Geometry,
    *,
    role: str = "label",
    grid_of: str = "image",
) -> None:
    tol = GRID_TOLERANCE * min(image.spacing)
    problems = []
    if tuple(shape) != image.shape:
        problems.append(f"shape {tuple(shape)} vs {image.shape}")
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    if not np.allclose(spacing, image.spacing, atol=tol, rtol=0):
        problems.append(f"spacing {_fmt(spacing)} vs {_fmt(image.spacing)} mm")
    if not problems:
        # compare where the grid's corner voxels lie in the world: catches shifts, flips and rotations
        corners = np.array(np.meshgrid(*[(0, n - 1) for n in shape], indexing="ij")).reshape(3, -1)
        corners = np.vstack([corners, np.ones(corners.shape[1])])
        offset = float(np.linalg.norm((affine @ corners - image.affine @ corners)[:3], axis=0).max())
        if offset > tol:
            problems.append(
                f"affine differs: voxels lie up to {offset:.3g} mm apart "
                f"(origin {_fmt(affine[:3, 3])} vs {_fmt(image.affine[:3, 3])})"
            )
    if problems:
        raise VolumeError(
            f"{role} {source} is not on the grid of {grid_of} {image.source}: " + "; ".join(problems)
        )


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _read_any(path: str | os.PathLike, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Return (array in RAS+ voxel order, RAS affine, source string), checked to be 3D."""
    p = Path(path)
    source = str(p)
    if not p.exists():
        raise VolumeError(f"{source}: no such file or folder")
    if series_uid is not None and not p.is_dir():
        raise VolumeError(f"{source}: a series_uid ({series_uid}) is given but this is not a DICOM folder")
    name = p.name.lower()
    try:
        if p.is_dir():
            array, affine = _read_dicom_series(p, series_uid)
        elif name.endswith(NIFTI_SUFFIXES):
            array, affine = _read_nifti(p)
        elif name.endswith(ITK_SUFFIXES) or name.endswith(".dcm"):
            array, affine = _read_itk(p)
        else:
            raise VolumeError(
                f"{source}: unknown volume format (expected .nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd "
                "or a DICOM series folder)"
            )
    except VolumeError:
        raise
    except (EOFError, OSError, zlib.error, RuntimeError, ValueError, MemoryError) as exc:
        raise VolumeError(f"{source}: cannot read the volume (corrupt or truncated?): {_short(exc)}") from exc
    except Exception as exc:  # nibabel's ImageFileError and friends: still the file's fault
        raise VolumeError(f"{source}: cannot read the volume: {type(exc).__name__}: {_short(exc)}") from exc
    array = _squeeze_to_3d(array, source)
    array, affine = _to_ras(array, affine)
    return array, affine, source


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 300 else text[:300] + "..."


def _squeeze_to_3d(array: np.ndarray, source: str) -> np.ndarray:
    # A trailing singleton 4th/5th axis (x, y, z, 1) is common in NIfTI; anything else that is not 3D is not
    # a CT volume.
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeError(f"{source}: expected a 3D volume, got a {array.ndim}D array of shape {array.shape}")
    if min(array.shape) < 2:
        raise VolumeError(f"{source}: expected a 3D volume, got a single slice of shape {array.shape}")
    return array


def _read_nifti(p: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = _load_nifti(p)  # the header: which NIfTI class, and nibabel's own checks of it
    if not p.name.lower().endswith(".gz"):
        # dataobj applies scl_slope/scl_inter; keep the stored dtype when there is no scaling
        return np.asarray(np.asanyarray(img.dataobj)), np.asarray(img.affine, dtype=np.float64)
    # nibabel stops reading before the gzip trailer, where the CRC-32 and the length are checked: give it
    # our own stream and read that to its end, so a damaged file fails instead of giving wrong voxels (still
    # one decompression; GzipFile raises BadGzipFile/EOFError/zlib.error)
    with gzip.open(p, "rb") as stream:
        holder = nib.FileHolder(fileobj=stream)
        img = type(img).from_file_map({name: holder for name, _ in type(img).files_types})
        array = np.asarray(np.asanyarray(img.dataobj))
        while stream.read(1 << 20):  # normally only the trailer is left
            pass
    return array, np.asarray(img.affine, dtype=np.float64)


def _load_nifti(path: str | os.PathLike):
    """``nibabel.load`` of a NIfTI file (its header; the voxels are read on demand), checked to be an image."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    img = nib.load(str(path))
    if not isinstance(img, SpatialImage):
        raise VolumeError(f"{path}: not an image volume ({type(img).__name__})")
    return img


def _read_itk(p: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    with _quiet_itk():
        img = sitk.ReadImage(str(p))
    return _from_sitk(img, p)


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series of a folder: its SeriesInstanceUID and its files (GDCM's slice order)."""

    uid: str
    files: tuple[str, ...]

    def describe(self) -> str:
        """``UID 'SeriesDescription' (N slices)``, for messages."""
        return f"{self.uid} {_series_description(self.files[0])!r} ({len(self.files)} slice(s))"


#: DICOM modalities that are objects about images, not images: a segmentation or structure set stored beside
#: its CT is not a second series of the scan
NON_IMAGE_MODALITIES = ("SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG")


def dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """The image series in ``folder``, grouped by SeriesInstanceUID (GDCM), largest first (series of
    :data:`NON_IMAGE_MODALITIES`, e.g. a DICOM-SEG beside its CT, are left out)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    with _quiet_itk():
        found = [DicomSeries(uid, tuple(reader.GetGDCMSeriesFileNames(str(folder), uid)))
                 for uid in reader.GetGDCMSeriesIDs(str(folder))]  # fmt: skip
    found = [s for s in found if _modality(s.files[0]) not in NON_IMAGE_MODALITIES]
    return sorted(found, key=lambda s: (-len(s.files), s.uid))


def _modality(path: str) -> str:
    import pydicom

    try:
        return str(
            pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", "")
        )
    except Exception:  # unreadable here: left to the image reader, which names the file
        return ""


#: how to name the series of a folder holding several, as `amt import` takes it (:func:`select_series`)
IMPORT_SERIES_HINT = "name the one to read (series_uid column of the import metadata CSV)"


def select_series(
    folder: str | os.PathLike,
    series_uid: str | None = None,
    found: list[DicomSeries] | None = None,
    *,
    hint: str = IMPORT_SERIES_HINT,
) -> DicomSeries:
    """The series of ``folder`` to read: the only one, or the one ``series_uid`` names. Several series and
    no ``series_uid``, or an unknown ``series_uid``, is a :class:`VolumeError` listing the series present
    (UID, SeriesDescription, number of slices), so pixels and metadata always come from one series;
    ``hint`` tells how the caller's user names a series (default: the import's ``series_uid`` column)."""
    found = dicom_series(folder) if found is None else found
    if not found:
        raise VolumeError(f"{folder}: no DICOM series found in this folder")
    if series_uid is not None:
        chosen = [s for s in found if s.uid == str(series_uid).strip()]
        if not chosen:
            raise VolumeError(f"{folder}: no DICOM series {series_uid} in this folder (present: "
                              f"{'; '.join(s.describe() for s in found)})")  # fmt: skip
        return chosen[0]
    if len(found) > 1:
        listing = "; ".join(s.describe() for s in found)
        raise VolumeError(
            f"{folder}: {len(found)} DICOM series in one folder: {listing}; keep one series per folder or {hint}"
        )
    return found[0]


def _series_description(path: str) -> str:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        with _quiet_itk():
            reader.ReadImageInformation()
        text = reader.GetMetaData("0008|103e").strip() if reader.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        text = ""
    return text or "no description"


def _read_dicom_series(folder: Path, series_uid: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    series = select_series(folder, series_uid)
    files = series.files
    if len(files) < 2:
        raise VolumeError(f"{folder}: the DICOM series has a single slice, not a 3D volume")
    step = check_slice_geometry(folder, series)
    reader = sitk.ImageSeriesReader()
    with _quiet_itk():
        reader.SetFileNames(list(files))
        img = reader.Execute()  # GDCM applies RescaleSlope/RescaleIntercept (HU)
    if abs(img.GetSpacing()[2] - step) > SLICE_TOLERANCE * step + 1e-3:
        raise VolumeError(
            f"{folder}: the reader's slice spacing {img.GetSpacing()[2]:.4g} mm differs from the slice positions' "
            f"{step:.4g} mm"
        )
    return _from_sitk(img, folder)


#: slices of one series may lie this far (as a fraction of the median step) from an even spacing
SLICE_TOLERANCE = 0.02
#: the DICOM modalities read as images (CT, and "" for files without the tag)
IMAGE_MODALITIES = ("CT", "")


def check_slice_geometry(folder: str | os.PathLike, series: DicomSeries) -> float:
    """Check that a DICOM series is one regular 3D grid before it is stacked: CT modality, one orientation,
    no file of the series that GDCM could not read, no two slices at one position, and evenly spaced slices
    along the normal (a missing slice or a gap would otherwise be spread over the whole volume as a wrong
    spacing), without a gantry tilt (a sheared grid). Returns the slice step in mm; a
    :class:`VolumeError` names the folder, the file(s) and the fault otherwise."""
    import pydicom

    folder = Path(folder)
    tags = [
        "Modality",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "SeriesInstanceUID",
        "PixelSpacing",
    ]
    headers = []
    for f in series.files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=tags)
        except Exception as exc:  # pydicom's errors have no common base class
            raise VolumeError(f"{f}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise VolumeError(
                f"{f}: no ImagePositionPatient/ImageOrientationPatient: the slice cannot be placed"
            )
        headers.append(ds)
    modality = str(headers[0].get("Modality", "")).upper()
    if modality not in IMAGE_MODALITIES:
        raise VolumeError(f"{folder}: the DICOM series is modality {modality!r}, not CT")
    # a file of this series that GDCM left out (damaged, truncated) would be a silent gap, or at either end a
    # silently shorter volume
    listed = {os.path.realpath(f) for f in series.files}
    with open(series.files[0], "rb") as fh:
        head = fh.read(132)
    for other in sorted(p for p in folder.iterdir() if p.is_file() and os.path.realpath(p) not in listed):
        fault = _left_out_fault(other, series.uid, head)
        if fault:
            raise VolumeError(f"{other}: {fault}")
    orientation = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    for f, ds in zip(series.files, headers, strict=True):
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=1e-4):
            raise VolumeError(
                f"{f}: the slice is oriented differently from the rest of the series in {folder}"
            )
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    order = np.argsort(positions @ normal)
    depth = (positions @ normal)[order]
    steps = np.diff(depth)
    names = [Path(series.files[k]).name for k in order]
    same = np.flatnonzero(steps < 1e-3)
    if same.size:
        k = int(same[0])
        raise VolumeError(f"{folder}: slices {names[k]} and {names[k + 1]} lie at the same position "
                          f"({depth[k]:.2f} mm along the normal): a duplicated slice or two series in one")  # fmt: skip
    step = float(np.median(steps))
    off = np.flatnonzero(np.abs(steps - step) > SLICE_TOLERANCE * step + 1e-3)
    if off.size:
        k = int(off[0])
        raise VolumeError(
            f"{folder}: slices are not evenly spaced: {steps[k]:.3f} mm between {names[k]} and {names[k + 1]}, "
            f"{step:.3f} mm elsewhere ({off.size} uneven step(s)): a missing slice, a gap or a variable pitch; "
            "export the series complete, or resample it to even slices first"
        )
    # a gantry tilt shifts each slice sideways by the same amount, so the drift adds up over the series, while
    # the rounding of written positions does not: the whole drift is judged against half a pixel
    offset = positions[order] - positions[order][0]
    drift = np.linalg.norm(offset - np.outer(offset @ normal, normal), axis=1)
    pixel = [float(v) for v in headers[0].get("PixelSpacing", [1.0, 1.0])]
    if drift.max() > 0.5 * min(pixel):
        k = int(np.argmax(drift))
        raise VolumeError(
            f"{folder}: the slices drift {drift.max():.2f} mm sideways over {depth[k] - depth[0]:.1f} mm along the "
            f"normal ({names[k]}; pixels {min(pixel):.2f} mm): a gantry tilt, a sheared grid that this reader "
            "would misplace; resample it first"
        )
    return step


#: the SOP class of a DICOMDIR, a DICOM file of an export folder that belongs to no series
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


def _left_out_fault(path: Path, series_uid: str, head: bytes) -> str | None:
    """Why a file of a series folder that GDCM did not list is a damaged slice, or None when it is none
    (a file of another series, a DICOMDIR, a file that is not DICOM). ``head``: the first 132 bytes of a file
    of the series (its preamble and DICM marker). A file cut inside its header may end before its DICM
    marker (pydicom cannot read it) or before its SeriesInstanceUID (pydicom reads it without one)."""
    import pydicom

    damaged = "a damaged DICOM file (truncated?) in the series folder"
    with open(path, "rb") as fh:
        start = fh.read(132)
    if not start:  # nothing tells whose it was: a slice lost in a transfer would be a gap or a shorter volume
        return (
            "an empty file in the DICOM series folder (a slice lost in transfer?): export the series again, "
            "or remove the file if it is not a slice"
        )
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:  # pydicom's errors have no common base class
        if start[128:] == b"DICM":
            return damaged
        if 0 < len(start) < len(head) and head.startswith(start):
            return f"{damaged}: its {len(start)} bytes are the start of the series' files, cut before the DICM marker"
        return None  # not DICOM (a README): not a slice
    uid = ds.get("SeriesInstanceUID")
    if uid is None:  # pydicom read it, so it has the DICM marker; every object of a series has this UID
        meta = getattr(ds, "file_meta", None) or {}
        if str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
            return None
        return f"{damaged}: it has no SeriesInstanceUID"
    if str(uid) == series_uid:
        return "a file of the series that cannot be read as an image (damaged or truncated?)"
    return None


def _from_sitk(img, p: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    if img.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{p}: {img.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar volume"
        )
    dim = img.GetDimension()
    array = sitk.GetArrayFromImage(img)  # axes reversed: (z, y, x)
    array = np.ascontiguousarray(array.transpose(tuple(range(dim - 1, -1, -1))))
    if dim != 3:
        return array, np.eye(4)  # rejected as not 3D by the caller
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(np.array(img.GetSpacing(), dtype=np.float64))
    lps[:3, 3] = np.array(img.GetOrigin(), dtype=np.float64)
    return array, _LPS_TO_RAS @ lps


def _to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to the closest canonical RAS+ voxel order (nibabel.as_closest_canonical semantics)."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return array, affine
    out = nio.apply_orientation(array, ornt)
    new_affine = affine @ nio.inv_ornt_aff(ornt, array.shape)
    return np.ascontiguousarray(out), new_affine


@contextlib.contextmanager
def _quiet_itk():
    """Silence ITK's stderr warnings (e.g. 'non uniform sampling' of 1e-3 mm) for one call."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


# --- writing ---------------------------------------------------------------------------------------------


def write_volume(
    volume_or_array: Volume | np.ndarray,
    affine: np.ndarray | None,
    path: str | os.PathLike,
    *,
    slope: float | None = None,
) -> Path:
    """Write a volume as NIfTI (.nii or .nii.gz), atomically; the voxel dtype is kept as given.

    ``affine`` may be None when a :class:`Volume` is passed. ``slope``: the header's ``scl_slope`` (a
    reader multiplies the stored voxels by it; amt's probability maps are uint8 with slope 1/255). A failed
    write leaves no partial file and any older file at ``path`` untouched. Output is deterministic (same
    array, same bytes).
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise VolumeError(f"{path}: write_volume writes NIfTI; use a .nii.gz (or .nii) file name")
    if isinstance(volume_or_array, Volume):
        array = volume_or_array.array
        affine = volume_or_array.affine if affine is None else affine
    else:
        array = np.asarray(volume_or_array)
    if affine is None:
        raise VolumeError(f"{path}: an affine is needed to write a bare array")
    if array.ndim != 3:
        raise VolumeError(f"{path}: expected a 3D array to write, got shape {array.shape}")
    img = nifti_image(array, affine, slope=slope)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def nifti_image(array: np.ndarray, affine: np.ndarray, *, slope: float | None = None):
    """The one NIfTI header amt writes: the array as given, the affine as both qform and sform (code 1,
    scanner), millimetres, and ``scl_slope`` when given (a ``nibabel.Nifti1Image``)."""
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(array, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def nifti_gz_bytes(array: np.ndarray, affine: np.ndarray, level: int = GZIP_LEVEL) -> bytes:
    """A .nii.gz file's bytes (:func:`nifti_image`), deterministic: the gzip header has mtime 0 and no file
    name; ``level`` is the gzip compression level."""
    import io

    raw = nifti_image(array, affine).to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=level, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()
