"""Anterior mediastinal tumours inserted into real, tumour-free chest CT.

``find_prevascular_space`` reads the anatomy from the HU alone: the body (largest component above
-500 HU), the aerated lungs (large air components inside the body), bone (not the blood pool of an arterial
phase, as dense as bone: :func:`_blood_between`), the sternum (bone in the anterior midline) and, between the
lungs, the mediastinum (narrowing, in front of the lungs' anterior tips, to the sternum). The prevascular
space is its anterior part, behind the sternum and in front of the great vessels and the heart, at the levels
from the upper heart (below it the heart fills the mediastinum: the level where the mediastinum is widest) up
to the top of the sternum; its voxels are fat or soft tissue, never lung or bone.

``insert_tumour`` places one histology-driven mass there with the synthetic cohort's own tumour model
(:mod:`amt_core.synth.tumour`: shape, lobulation, margin, texture, cyst, necrosis, fat, calcification by
histology), evaluated on a grid supersampled to about 1 mm and averaged back (partial-volume edges). Where
it would enter aerated lung or bone it is clipped (the voxel's air or bone fraction is kept), and so is the
part beyond the scan's field of view (its first or last slice, its in-plane edge: evaluated on a grid that
reaches beyond the scan, so the record's clipped fraction and planned volume count it); when too much of
it would be clipped it is shrunk and placed again (the record says how often). The label is every
voxel the clipped tumour fills to at least one half, without fragments smaller than a lesion; the tumour's
intensity is kept only on the label and its partial-volume rim, so image and label agree.

Mass effect (:func:`displace`): the tumour does not overwrite what was there. The vessels (and the heart)
under it are pushed outwards, volume-conserving per direction from its centre, so they abut it deformed,
not erased; it takes the place of most of the mediastinal fat in its way (``FAT_GIVE``) and pushes the rest
aside; the lung gives way (``LUNG_GIVE``); bone and the chest wall stay put, and the shift tapers to nothing
at ``TAPER`` times the tumour's radius. The noise the resampling smooths away is added back.

The tumour enhances as its histology does (a cyst not at all) in the background's contrast phase, estimated
from the blood HU of the great vessels when not given (:func:`blood_hu`, :func:`contrast_phase`); the
record keeps the tumour's HU against the blood. Scanner noise matched to the background's is added inside
the tumour. Each insertion is checked (location, volume, contrast with a shell around it) and refused with
:class:`InsertionRejected` naming the reason. Deterministic from the ``numpy`` generator passed in.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from amt_core.synth.canvas import F32, Canvas, sub_box

#: the bundled backgrounds (downsampled real chest CT, with their licences and SOURCES.md)
BUNDLE_DIR = Path(__file__).resolve().parent / "chest_backgrounds"
#: HU below which a voxel inside the body is aerated (lung, airway)
AIR_HU = -500.0
#: HU above which a voxel is bone (or dense calcification)
BONE_HU = 250.0
#: a bright (above ``BONE_HU``) component between the lungs' front halves holding a disk of this radius (mm)
#: is contrast-filled blood (the aorta, the pulmonary trunk, the heart in an arterial phase), not bone
BLOOD_CORE_MM = 5.0
BLOOD_MIN_MM2 = 300.0  # and covers at least this (mm2, a vessel of 10 mm radius)
#: HU above which a voxel in the anterior midline is the sternum
STERNUM_HU = 150.0
#: an aerated component smaller than this (ml) is not a lung (airway, bowel gas)
MIN_LUNG_ML = 50.0
#: the checks an inserted tumour must pass
MAX_CLIPPED = 0.30  # fraction of the planned tumour that may be clipped (lung, bone, the scan's edge, ...)
VOLUME_TOLERANCE = 0.35  # label volume within planned x (1 - MAX_CLIPPED - this, 1 + this)
MIN_CONTRAST_HU = 15.0  # |mean HU(tumour) - mean HU(shell around it)|, the shell without lung
SHELL_MM = 5.0
#: HU bands of what lies beside the outline (:func:`outline_composition`): aerated lung below the first, fat
#: up to the second
LUNG_HU, FAT_HU = -500.0, -30.0
#: soft tissue thicker than this radius (mm) in the mediastinum is a great vessel or the heart
VESSEL_RADIUS_MM = 7.0
#: the levels of the prevascular space: this far (mm) down from the thoracic inlet
LEVELS_MM = 100.0
#: levels below the thoracic inlet: lung cross-section at least this fraction of the largest
INLET_LUNG = 0.3
SUPERSAMPLE_MM = 1.0
MAX_FINE_VOXELS = 2_000_000
SHRINK = 0.85  # each retry at a smaller size scales the diameter by this
MAX_SHRINKS = 6
#: mass effect: full displacement up to TAPER[0] times the tumour's radius, none beyond TAPER[1] times
TAPER = (2.0, 4.0)
#: the border between mobile (mediastinum, lung) and rigid anatomy (bone, chest wall) is smoothed by this (mm)
MOBILE_SMOOTH_MM = 3.0
#: the fraction of its volume the aerated lung gives up to a mass pushing into it, and the fraction of the
#: mediastinal fat in its way it takes the place of (the rest is pushed aside; vessels and heart keep theirs)
LUNG_GIVE = 0.5
FAT_GIVE = 0.8
#: the contrast phase from the blood HU of the great vessels: plain below the first, venous below the second,
#: else arterial (unenhanced blood about 40 HU, venous-phase aorta 130-200 HU, arterial 250-450 HU)
PHASE_HU = (100.0, 230.0)


class InsertionRejected(ValueError):
    """A tumour that cannot be inserted as asked; ``reason`` says why (location, volume, contrast, ...)."""

    def __init__(self, reason: str, source: str = ""):
        self.reason = reason
        super().__init__(f"{source}: {reason}" if source else reason)


@dataclass(frozen=True)
class ChestAnatomy:
    """What ``find_prevascular_space`` found, on the background's voxel grid (x, y, z = R, A, S)."""

    spacing: tuple[float, float, float]
    body: np.ndarray
    lungs: np.ndarray
    bone: np.ndarray
    mediastinum: np.ndarray  # between the lungs, in front of the spine, inside the body
    anterior: np.ndarray  # its front half (sternum to half-way to the spine): where a tumour may grow
    space: np.ndarray  # the prevascular space
    z_levels: tuple[int, int]  # slices of the prevascular space, lowest and highest (inclusive)
    sternum_y: np.ndarray  # per slice: y index of the back of the sternum (-1: no sternum found)


@dataclass
class InsertionRecord:
    """One inserted tumour (JSON-ready): where, how big, how it looks against its neighbourhood."""

    histology: str
    planned_diameter_mm: float
    diameter_mm: float  # after shrinking to fit
    shrinks: int  # how often it was shrunk and placed again
    position_mm: list  # label centroid, world RAS mm
    position_voxel: list
    planned_volume_ml: float  # the unclipped tumour (sum of occupancies, within the scan and beyond it)
    volume_ml: float  # the label
    clipped_fraction: float  # of the planned tumour, at lung or bone, outside the mediastinum or the scan
    #: "none" or what cut it: "lung", "bone", "outside the anterior mediastinum", "outside the field of
    #: view" (beyond the scan's first or last slice or its in-plane edge), joined by "+"
    clipped_at: str
    contrast_hu: float  # mean HU of the tumour minus that of a shell around it (lung excluded)
    tumour_hu: float
    shell_hu: float
    noise_hu: float  # the background's noise, added inside the tumour
    replaced_fat_fraction: float = float("nan")  # of the label, voxels that were fat (< -30 HU) before
    max_shift_mm: float = 0.0  # the largest displacement of the background by the mass effect
    dropped_fragment_ml: float = 0.0  # label fragments smaller than a lesion, removed from label and image
    contrast: str = "none"  # the contrast phase the tumour enhances by
    contrast_from: str = "given"  # or "estimated from the blood HU"
    blood_hu: float | None = None  # 90th percentile HU of the great vessels and heart (None: not measurable)
    blood_contrast_hu: float | None = None  # median HU of the tumour minus blood_hu
    #: shares of the outline (:func:`outline_composition`) that stand out from the tumour, and against lung
    border_contrast: float = math.nan
    border_lung: float = math.nan


# --- reading the anatomy ----------------------------------------------------------------------------------
def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == int(np.argmax(sizes)) + 1


def find_prevascular_space(image: np.ndarray, spacing, source: str = "background") -> ChestAnatomy:
    """Body, lungs, bone, mediastinum and the prevascular space of a chest CT in HU (RAS voxel order).

    Raises :class:`InsertionRejected` when the scan has no two lungs, no sternum or no mediastinum
    between the lungs (not a chest CT, or one that misses the mediastinum).
    """
    hu = np.asarray(image, dtype=F32)
    sp = np.asarray(spacing, float)
    voxel_ml = float(np.prod(sp)) / 1000.0
    smooth = ndimage.uniform_filter(hu, size=(3, 3, 1))
    body = _largest(smooth > -500)
    body = np.stack([ndimage.binary_fill_holes(body[:, :, k]) for k in range(body.shape[2])], axis=2)
    air = (smooth < AIR_HU) & body
    lab, n = ndimage.label(air)
    sizes = np.bincount(lab.ravel())[1:] * voxel_ml
    lungs = np.isin(lab, 1 + np.flatnonzero(sizes >= MIN_LUNG_ML))
    if not lungs.any():
        raise InsertionRejected(
            f"no aerated lung found (no air component inside the body of at least "
            f"{MIN_LUNG_ML:g} ml): not a chest CT",
            source,
        )
    bright = (smooth > BONE_HU) & body  # bone, and the blood in an arterial phase (sorted out below)
    nx, ny, nz = hu.shape
    xs = np.arange(nx)
    mediastinum = np.zeros_like(body)
    blood = np.zeros_like(body)
    sternum_y = np.full(nz, -1, dtype=int)
    width = np.zeros(nz)
    y_mid = np.full(nz, ny, dtype=int)
    for k in range(nz):
        lung2 = lungs[:, :, k]
        if lung2.sum() * sp[0] * sp[1] < 400.0:
            continue
        xb = np.flatnonzero(body[:, :, k].any(axis=1))
        xm = 0.5 * (xb[0] + xb[-1])  # body midline
        left = np.where(lung2 & (xs[:, None] < xm), xs[:, None], -1).max(axis=0)  # medial edge, patient left
        right = np.where(lung2 & (xs[:, None] > xm), xs[:, None], nx).min(axis=0)
        rows = np.flatnonzero((left >= 0) & (right < nx) & (right - left > 1))
        if rows.size < 3:
            continue
        # sternum: bone in the anterior midline, in front of the lungs' anterior tips (its marrow is
        # cancellous bone: a lower threshold than ``BONE_HU``), not the blood of the heart and the great
        # vessels (as bright as bone in an arterial phase) that lies between the lungs' front halves
        between = np.zeros((nx, ny), bool)
        for j in rows[rows >= rows.min() + 0.5 * (rows.max() - rows.min())]:
            between[left[j] + 1 : right[j], j] = True
        blood[:, :, k] = _blood_between(bright[:, :, k], between, sp)
        dense = (hu[:, :, k] > STERNUM_HU) & ~ndimage.binary_dilation(blood[:, :, k], np.ones((3, 3), bool))
        band = np.abs(xs - xm) * sp[0] < 25.0
        bone_rows = np.flatnonzero(dense[band].any(axis=0) & body[band, :, k].any(axis=0))
        front = bone_rows[(bone_rows > rows.max() - 10.0 / sp[1]) & (bone_rows < rows.max() + 40.0 / sp[1])]
        # back of the sternum (RAS: y grows anteriorly): the most anterior run of bright rows at least 4 mm
        # thick (gaps up to 3 mm of darker marrow allowed), so neither an enhanced aorta behind it nor a thin
        # bright object in front of it (an ECG lead, a skin marker) is taken for it; the most anterior run
        # when none is that thick
        if front.size:
            runs = np.split(front, np.flatnonzero(np.diff(front) > max(2.0, 3.0 / sp[1])) + 1)
            thick = [r for r in runs if (r.max() - r.min() + 1) * sp[1] >= 4.0]
            front = (thick or runs)[-1]
        st = int(front.min()) if front.size else -1
        # spine: bone in the midline band behind the lungs' posterior half (not the blood above)
        back = bone_rows[bone_rows < rows.min() + 0.5 * (rows.max() - rows.min())]
        y_spine = int(back.max()) if back.size else int(rows.min())
        y_front = st if st >= 0 else int(rows.max()) + 1
        j0 = int(rows.max())
        # in front of the lungs' anterior tips up to the sternum: from the lungs' medial edges there to the
        # sternum's sides (no wider), along a quarter ellipse, so a tumour cut off there has rounded sides
        sx = np.flatnonzero(band & (hu[:, st, k] > STERNUM_HU)) if st >= 0 else np.array([], int)
        s_lo = max(int(sx.min()) - 1, int(left[j0])) if sx.size else int(left[j0])
        s_hi = min(int(sx.max()) + 1, int(right[j0])) if sx.size else int(right[j0])
        for j in range(y_spine + 1, y_front):
            if left[j] >= 0 and right[j] < nx:
                mediastinum[left[j] + 1 : right[j], j, k] = True
            elif j > j0:
                g = math.sqrt(1.0 - ((j - j0) / (y_front - j0)) ** 2)
                lo = int(round(s_lo + (left[j0] - s_lo) * g))
                hi = int(round(s_hi + (right[j0] - s_hi) * g))
                lo = max(lo, int(left[j])) if left[j] >= 0 else lo  # one lung still beside it
                hi = min(hi, int(right[j])) if right[j] < nx else hi
                mediastinum[lo + 1 : hi, j, k] = True
        sternum_y[k] = st
        mid = (y_spine + y_front) // 2
        y_mid[k] = mid
        width[k] = float(np.count_nonzero(mediastinum[:, mid, k] & ~lungs[:, mid, k])) * sp[0]
    mediastinum &= body & ~lungs
    # bright voxels are bone unless they are the contrast-filled blood of the great vessels and the heart
    bone = bright & ~(blood & mediastinum)
    mediastinum &= ~bone
    anterior = mediastinum & (np.arange(ny)[None, :, None] >= y_mid[None, None, :])
    if not mediastinum.any():
        raise InsertionRejected("no mediastinum found between two lungs behind a sternum", source)
    # levels: from the thoracic inlet (the highest slice whose lungs' cross-section is still large) down
    # ``LEVELS_MM``: the supra-aortic vessels, the aortic arch, the pulmonary trunk and the upper heart
    lung_area = lungs.sum(axis=(0, 1))
    ok = (width > 0) & (lung_area >= INLET_LUNG * lung_area.max())
    if not ok.any():
        raise InsertionRejected("no level with two lungs and a mediastinum between them", source)
    k_inlet = int(np.flatnonzero(ok).max())
    keep = ok & (np.arange(nz) >= k_inlet - LEVELS_MM / sp[2]) & (sternum_y >= 0)
    levels = np.flatnonzero(keep)
    if levels.size == 0:
        raise InsertionRejected(
            "no sternum found at the levels of the great vessels (the scan must cover "
            "the chest from the upper heart to the aortic arch)",
            source,
        )
    k_heart, k_top = int(levels.min()), int(levels.max())
    space = np.zeros_like(body)
    r = max(1, int(round(VESSEL_RADIUS_MM / sp[0])))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = xx**2 + yy**2 <= r * r
    ys_all = np.arange(ny)
    for k in range(k_heart, k_top + 1):
        med = mediastinum[:, :, k]
        if not keep[k] or not med.any():
            continue
        ys = np.flatnonzero(med.any(axis=0))
        # the great vessels and the heart: soft tissue too thick to be the thymus or a node
        solid = ndimage.binary_opening((smooth[:, :, k] > -20.0) & med, structure=disk)
        # per column: in front of the front of the vessels/heart, else of the front 40 % of the depth
        y_cut = np.where(
            solid.any(axis=1),
            np.where(solid, ys_all[None, :], -1).max(axis=1),
            ys.max() - 0.4 * (ys.max() - ys.min()),
        )
        tissue = (hu[:, :, k] > -200.0) & (hu[:, :, k] < 150.0)
        space[:, :, k] = med & tissue & (ys_all[None, :] > y_cut[:, None])
    space = ndimage.binary_opening(space, structure=np.ones((3, 3, 1), bool))
    if not space.any():
        raise InsertionRejected(
            "no prevascular space found: no fat or soft tissue behind the sternum "
            "between the lungs at the levels of the great vessels",
            source,
        )
    return ChestAnatomy(
        (float(sp[0]), float(sp[1]), float(sp[2])),
        body,
        lungs,
        bone,
        mediastinum,
        anterior,
        space,
        (k_heart, k_top),
        sternum_y,
    )


def _blood_between(bright: np.ndarray, between: np.ndarray, spacing) -> np.ndarray:
    """One slice: the ``bright`` (above ``BONE_HU``) in-plane components that hold a disk of ``BLOOD_CORE_MM``
    radius, cover ``BLOOD_MIN_MM2`` and lie mostly ``between`` the lungs' front halves: in an arterial phase
    the aorta, the pulmonary trunk and the heart are as dense as bone. A thin or small bright component (a
    calcification, costal cartilage, a vertebra at the thoracic inlet) stays bone, and so does the spine
    (behind the lungs' front halves) and the sternum (in front of them)."""
    r = max(1, int(round(BLOOD_CORE_MM / float(spacing[0]))))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    core = ndimage.binary_opening(bright, structure=xx**2 + yy**2 <= r * r)
    if not core.any():
        return core
    lab, n = ndimage.label(ndimage.binary_propagation(core, structure=np.ones((3, 3), bool), mask=bright))
    size = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    inside = np.bincount(lab[between], minlength=n + 1)[1:]
    big = size * float(spacing[0]) * float(spacing[1]) >= BLOOD_MIN_MM2
    blood = np.isin(lab, 1 + np.flatnonzero((inside > 0.5 * size) & big))
    return blood


# --- inserting a tumour -----------------------------------------------------------------------------------
def noise_sd(image: np.ndarray, anatomy: ChestAnatomy) -> float:
    """The background's noise (HU sd): robust spread of the image minus its in-plane median in soft tissue."""
    hu = np.asarray(image, dtype=F32)
    resid = hu - ndimage.median_filter(hu, size=(3, 3, 1))
    soft = ndimage.binary_erosion(anatomy.body & (hu > -150) & (hu < 150), structure=np.ones((3, 3, 1), bool))
    if soft.sum() < 100:
        return 10.0
    mad = float(np.median(np.abs(resid[soft] - np.median(resid[soft]))))
    # a 3x3 median leaves about 1.17x the noise variance in the residual
    return 1.4826 * mad / math.sqrt(1.17)


def blood_hu(image: np.ndarray, anatomy: ChestAnatomy) -> float | None:
    """The blood HU of the great vessels and the heart: the 90th percentile of the thick soft tissue (more
    than about 6 mm from its edge) of the mediastinum at the levels of the prevascular space; ``None`` when
    there is too little of it to measure. An enhanced vessel brighter than ``BONE_HU`` is not in
    ``anatomy.mediastinum``: the mediastinum's holes in each slice count as tissue too."""
    k0, k1 = anatomy.z_levels
    hu = ndimage.median_filter(np.asarray(image, F32)[:, :, k0 : k1 + 1], size=(3, 3, 1))
    med = anatomy.mediastinum[:, :, k0 : k1 + 1]
    region = np.stack([ndimage.binary_fill_holes(med[:, :, k]) for k in range(med.shape[2])], axis=2)
    sp = np.asarray(anatomy.spacing)
    r = max(1, int(round(6.0 / sp[0])))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = (xx**2 + yy**2 <= r * r)[:, :, None]
    thick = ndimage.binary_opening(region & (hu > 0.0) & (hu < 1500.0), structure=disk)
    if thick.sum() < 20:
        return None
    return round(float(np.percentile(hu[thick], 90)), 1)


def contrast_phase(blood: float | None) -> str:
    """``none``, ``venous`` or ``arterial`` from the blood HU (``PHASE_HU``); unknown blood HU: ``none``."""
    if blood is None or blood < PHASE_HU[0]:
        return "none"
    return "venous" if blood < PHASE_HU[1] else "arterial"


def fragment_free(occ: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray, int]:
    """The label of a tumour occupancy (voxels filled to at least one half, components smaller than a lesion
    dropped) and the occupancy kept only on the label and its partial-volume rim (its 26-neighbours), so a
    dropped fragment leaves no tumour intensity in the image. Returns (occupancy, label uint8, dropped
    voxels)."""
    from amt_core.synth.tumour import drop_fragments

    raw = (occ >= 0.5).astype(np.uint8)
    label = drop_fragments(raw, spacing)
    rim = ndimage.binary_dilation(label, structure=np.ones((3, 3, 3), bool))
    return (occ * rim).astype(F32), label, int(raw.sum()) - int(label.sum())


def displace(
    bg: np.ndarray,
    occ: np.ndarray,
    box,
    anatomy: ChestAnatomy,
    noise_hu: float,
    rng: np.random.Generator,
) -> tuple[tuple, np.ndarray, float]:
    """The background pushed away from a tumour of occupancy ``occ`` (on ``box``): the mass effect.

    Along each direction from the tumour's centre the background's tissue within radius ``s`` moves out to
    the radius ``r`` where the cone holds it beside the tumour; the background's fat counts for
    ``1 - FAT_GIVE`` and its aerated lung for ``1 - LUNG_GIVE`` of their volume (from the centre out) until
    they have given up as much as the tumour takes along that direction. Vessels, heart and the rest of the
    fat keep their volume (what was under the tumour ends up around it, the vessels against it); the lung
    is compressed; past enough fat and lung nothing moves. The shift is nil on bone and the chest wall
    (the mediastinum and the lungs move; the border smoothed by ``MOBILE_SMOOTH_MM``) and tapered from
    ``TAPER[0]`` to ``TAPER[1]`` times the tumour's radius. Resampled by cubic spline; the noise that
    smooths away (measured in the soft tissue that moved) is added back. Returns (region slices, the
    background on the region, the largest shift in mm outside the tumour); voxels that move less than
    0.05 mm keep their value exactly.
    """
    sp = np.asarray(anatomy.spacing, float)
    start = np.array([s.start for s in box])
    idx = np.argwhere(occ > 0)
    w = occ[occ > 0].astype(float)
    pts = (idx + start) * sp
    c = (pts * w[:, None]).sum(0) / w.sum()
    r_max = float(np.sqrt(((pts - c) ** 2).sum(1)).max()) + 0.5 * float(np.linalg.norm(sp))
    r1, r2 = TAPER[0] * r_max, TAPER[1] * r_max
    region = tuple(
        slice(max(0, int(np.floor((ci - r2) / s))), min(n, int(np.ceil((ci + r2) / s)) + 1))
        for ci, s, n in zip(c, sp, bg.shape, strict=True)
    )
    lo = np.array([s.start for s in region])
    # along each ray of a (theta, phi, rho) table: the tumour's occupancy, the lung and the fat
    n_th, n_ph, dr = 33, 64, 0.5 * float(sp.min())
    rho = np.arange(0.0, r2 + 2 * dr, dr)
    th, ph = np.linspace(0.0, np.pi, n_th), np.linspace(-np.pi, np.pi, n_ph, endpoint=False)
    T, P, R = np.meshgrid(th, ph, rho, indexing="ij")
    dirs = (np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T))
    at = [(ci + d * R) / s for ci, d, s in zip(c, dirs, sp, strict=True)]
    o = ndimage.map_coordinates(occ.astype(F32), [a - s0 for a, s0 in zip(at, start, strict=True)], order=1)
    on_region = [a - s0 for a, s0 in zip(at, lo, strict=True)]
    lung = ndimage.map_coordinates(anatomy.lungs[region].astype(F32), on_region, order=1)
    hu = ndimage.map_coordinates(bg[region].astype(F32), on_region, order=1, mode="nearest")
    fat = np.clip((-30.0 - hu) / 70.0, 0.0, 1.0) * (1.0 - lung)

    def integral(f):  # of f(rho) rho**2 d rho from 0, along each ray
        g = f * R**2
        return np.concatenate(
            [np.zeros(T.shape[:2] + (1,)), np.cumsum(0.5 * (g[..., 1:] + g[..., :-1]) * dr, -1)], -1
        )

    tumour_v, room = integral(o), integral(1.0 - o)  # in the image with the tumour: tumour and the rest
    # the background's tissue out to rho, fat and lung counted less by what they give (from the centre out,
    # at most as much as the tumour takes along the ray: what is left is pushed)
    give = np.minimum(integral(FAT_GIVE * fat + LUNG_GIVE * lung), tumour_v[..., -1:])
    material = integral(np.ones_like(o)) - give
    # the background radius whose tissue fills the image out to rho: material(source) = room(rho)
    table = np.empty_like(room)
    for i, j in np.ndindex(*T.shape[:2]):
        m = np.maximum.accumulate(material[i, j] + 1e-9 * rho)
        table[i, j] = np.interp(room[i, j], m, rho)
    # each voxel of the region: where its tissue comes from, in slabs along x; the region of ``TAPER[1]``
    # radii of a full-resolution scan is tens of millions of voxels: few arrays of its size, all float32
    shape = tuple(s.stop - s.start for s in region)
    g = [np.arange(s.start, s.stop) * h - ci for s, h, ci in zip(region, sp, c, strict=True)]
    gy, gz = g[1][None, :, None], g[2][None, None, :]
    # the mediastinum and the lungs move (their neighbours too: a smooth border); bone and its rim never
    mobile = anatomy.mediastinum[region] | anatomy.lungs[region]
    near = ndimage.binary_dilation(mobile) & ~ndimage.binary_dilation(anatomy.bone[region])
    weight = ndimage.gaussian_filter(mobile.astype(F32), MOBILE_SMOOTH_MM / sp)
    weight *= near
    del mobile, near
    tumour = np.zeros(shape, bool)
    tumour[tuple(slice(b.start - s.start, b.stop - s.start) for b, s in zip(box, region, strict=True))] = (
        occ > 0
    )
    # the background's cubic-spline coefficients around the region, as ``map_coordinates(mode="nearest")``
    # builds them for the whole image (edge-padded by ``pad``; the spline's reach beyond that is negligible)
    pad = 12
    ext = tuple(
        slice(max(0, s.start - pad), min(n, s.stop + pad)) for s, n in zip(region, bg.shape, strict=True)
    )
    widths = [(e.start - (s.start - pad), s.stop + pad - e.stop) for s, e in zip(region, ext, strict=True)]
    coef = ndimage.spline_filter(np.pad(bg[ext], widths, mode="edge"), order=3, output=F32, mode="nearest")
    f_grid, kept_1d = _spline_noise_kept()
    warped, loss, noise = (np.empty(shape, F32) for _ in range(3))
    moved = np.empty(shape, bool)
    max_shift = 0.0
    step = max(1, 250_000 // max(1, shape[1] * shape[2]))
    for i0 in range(0, shape[0], step):
        sl = slice(i0, min(i0 + step, shape[0]))
        gx = g[0][sl, None, None]
        r = np.sqrt(gx * gx + gy * gy + gz * gz)
        rs = np.maximum(r, 1e-6)
        on_table = np.empty((3, *r.shape))  # on the (theta, phi, rho) table
        on_table[0] = np.arccos(np.clip(gz / rs, -1.0, 1.0)) / np.pi * (n_th - 1)
        on_table[1] = (np.arctan2(gy, gx) + np.pi) / (2 * np.pi) * n_ph
        on_table[2] = np.minimum(r, rho[-1]) / dr
        source = ndimage.map_coordinates(table, on_table, order=1, mode="grid-wrap")
        del on_table
        source = np.where(r < rho[-1], np.minimum(source, r), r)
        taper = np.clip((r2 - r) / (r2 - r1), 0.0, 1.0)
        shift = weight[sl] * taper * taper * (3.0 - 2.0 * taper) * (r - source)
        del source, taper
        max_shift = max(max_shift, float(shift[~tumour[sl]].max(initial=0.0)))
        moved[sl] = shift > 0.05
        scale = (r - shift) / rs
        del shift, rs, r
        src = np.stack([(ci + gi * scale) / h for ci, gi, h in zip(c, (gx, gy, gz), sp, strict=True)])
        kept_var = np.prod([np.interp(q - np.floor(q), f_grid, kept_1d) for q in src], axis=0)
        loss[sl] = np.clip(1.0 - kept_var, 0.0, 1.0)
        # cubic spline: edges (vessel walls, the pleura) stay sharp; the noise it smooths is added back
        src -= np.array([s.start - pad for s in region], float)[:, None, None, None]  # on the coefficients
        warped[sl] = ndimage.map_coordinates(coef, src, order=3, mode="nearest", prefilter=False)
        noise[sl] = rng.standard_normal(scale.shape)  # slab by slab: the same draws as all at once
    del coef, weight
    # the noise the resampling smoothed away, measured in the soft tissue that moved (the background's own
    # noise texture: a smooth kernel's correlated noise loses less than white noise would)
    noise = ndimage.gaussian_filter(noise, (0.5, 0.5, 0.0))
    before = bg[region]
    soft = moved & ~ndimage.binary_dilation(tumour, iterations=2) & (before > -150.0) & (before < 150.0)
    if soft.sum() >= 50:
        lost = max(_spread(before, soft) ** 2 - _spread(warped, soft) ** 2, 0.0)
        noise *= F32(math.sqrt(lost / max(float(loss[soft].mean()), 1e-6)) / max(_spread(noise, soft), 1e-6))
    else:  # too little soft tissue moved to measure: the white-noise estimate
        noise *= F32(noise_hu / max(float(noise.std()), 1e-6))
    np.sqrt(loss, out=loss)
    noise *= loss
    warped += noise
    del noise, loss
    return region, np.where(moved, warped, before).astype(F32, copy=False), max_shift


def _spread(image: np.ndarray, mask: np.ndarray) -> float:
    """Noise (HU sd) of ``image`` in ``mask``: robust spread of the image minus its in-plane 3x3 median."""
    resid = (image - ndimage.median_filter(image, size=(3, 3, 1)))[mask]
    return 1.4826 * float(np.median(np.abs(resid - np.median(resid))))


@functools.lru_cache(maxsize=1)
def _spline_noise_kept(n: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """The variance of white noise kept by cubic-spline interpolation at a fractional offset (one axis):
    the sum of the squared weights of the cardinal spline, at ``n`` offsets from 0 to 1."""
    f = np.linspace(0.0, 1.0, n)
    weights = np.array([ndimage.map_coordinates(e, [20.0 + f], order=3, mode="mirror") for e in np.eye(41)])
    return f, (weights**2).sum(0)


def _supersampled(spacing, box, les, k_contrast, rng):
    """Occupancy and HU of a lesion on the background's voxels ``box``: the tumour model is evaluated on a
    grid of about ``SUPERSAMPLE_MM`` and averaged over each voxel (partial-volume edges)."""
    from amt_core.synth.canvas import ellipsoid_sdf
    from amt_core.synth.tumour import lesion_field, plan_calcifications

    sp = np.asarray(spacing, float)
    n = np.array([s.stop - s.start for s in box])
    # about 1 mm, coarser for a very large box (at most ``MAX_FINE_VOXELS``)
    step = max(SUPERSAMPLE_MM, float(np.cbrt(np.prod(n * sp) / MAX_FINE_VOXELS)))
    f = np.maximum(1, np.round(sp / step)).astype(int)
    fine_sp = sp / f
    origin = np.array([s.start for s in box]) * sp - (f - 1) / 2.0 * fine_sp
    fc = Canvas(tuple(n * f), fine_sp, origin, fill=0.0)
    occ_f = np.zeros(fc.shape, F32)
    val_f = np.zeros(fc.shape, F32)
    field_ = lesion_field(fc, les, k_contrast, rng)
    calcs = plan_calcifications(rng, les)
    if field_ is not None:
        fb, d, val = field_
        o = fc.occ(d)
        x, y, z = fc.coords(fb)
        for c, r, v in calcs:  # calcifications inside the tumour
            oc = fc.occ(ellipsoid_sdf(x, y, z, c, r)) * (d < 0)
            val = val + oc * (F32(v) - val)
        occ_f[fb], val_f[fb] = o, val
    shape6 = (n[0], f[0], n[1], f[1], n[2], f[2])
    occ = occ_f.reshape(shape6).mean(axis=(1, 3, 5))
    mass = (occ_f * val_f).reshape(shape6).mean(axis=(1, 3, 5))
    val = np.where(occ > 0, mass / np.maximum(occ, F32(1e-6)), F32(0.0)).astype(F32)
    return occ.astype(F32), val


def _in_scan(spacing, full, box, les, k_contrast, rng) -> tuple[np.ndarray, np.ndarray, float]:
    """Occupancy and HU (:func:`_supersampled`) of a lesion on ``box``, the scan's part of its voxel box
    ``full``, and the occupancy (voxels) of the planned lesion beyond the scan.

    The lesion's noise fields span the box it is evaluated on, so a lesion evaluated on a box cut by the
    scan's edge is not defined beyond it: where ``box`` is cut and the lesion evaluated on it reaches a cut
    face (it may go on beyond), or the lesion evaluated on ``full`` falls partly outside the scan, the
    lesion is the one of ``full`` (cropped to ``box``, its part outside counted); else the one of ``box``,
    as it always was. ``_supersampled`` takes as many draws from ``rng`` whatever the box."""
    before = rng.bit_generator.state
    occ, val = _supersampled(spacing, box, les, k_contrast, rng)
    if full == box:
        return occ, val, 0.0
    after = rng.bit_generator.state
    rng.bit_generator.state = before
    occ_full, val_full = _supersampled(spacing, full, les, k_contrast, rng)
    rng.bit_generator.state = after
    inner = sub_box(full, box)
    beyond = np.ones(occ_full.shape, bool)
    beyond[inner] = False
    outside = float(occ_full[beyond].sum(dtype=np.float64))
    faces = [
        np.take(occ, end, axis=a)
        for a, (f, b) in enumerate(zip(full, box, strict=True))
        for end, cut in ((0, b.start > f.start), (-1, b.stop < f.stop))
        if cut
    ]
    if outside > 0.0 or any(face.any() for face in faces):
        return occ_full[inner], val_full[inner], outside
    return occ, val, 0.0


def _place(anatomy: ChestAnatomy, radii: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A centre (mm, voxel frame) behind the sternum, between the lungs, at a level of the space."""
    sp = np.asarray(anatomy.spacing)
    kz = np.arange(anatomy.z_levels[0], anatomy.z_levels[1] + 1)
    kz = kz[anatomy.sternum_y[kz] >= 0]
    k = int(kz[rng.integers(kz.size)])
    j_st = int(anatomy.sternum_y[k])
    # x: the middle of the mediastinum about 1 cm behind the sternum
    med = anatomy.mediastinum[:, :, k]
    j = int(np.clip(j_st - round(10.0 / sp[1]), 0, med.shape[1] - 1))
    xs = np.flatnonzero(med[:, j]) if med[:, j].any() else np.flatnonzero(med.any(axis=1))
    x = 0.5 * (xs.min() + xs.max()) * sp[0] + rng.normal(0.0, 3.0)
    # y: against the back of the sternum, or against the lungs where they meet in front of the mediastinum
    i = int(np.clip(round(x / sp[0]), 0, med.shape[0] - 1))
    band = med[max(i - round(10.0 / sp[0]), 0) : i + round(10.0 / sp[0]) + 1]
    j_front = min(j_st, int(np.flatnonzero(band.any(axis=0)).max()) + 1) if band.any() else j_st
    y = j_front * sp[1] - 0.88 * radii[1] - rng.uniform(0.0, 3.0)
    z = k * sp[2] + rng.uniform(-0.5, 0.5) * sp[2]
    return np.array([x, y, z])


def insert_tumour(
    image: np.ndarray,
    spacing,
    histology: str,
    diameter_mm: float,
    rng: np.random.Generator,
    *,
    contrast: str | None = None,
    enhancement: float = 1.0,
    anatomy: ChestAnatomy | None = None,
    affine: np.ndarray | None = None,
    source: str = "background",
    max_shrinks: int = MAX_SHRINKS,
    mass_effect: bool = True,
):
    """Insert one anterior mediastinal tumour into a tumour-free chest CT (HU, RAS voxel order).

    Returns ``(image float32 HU, label uint8, InsertionRecord)``. The tumour is shrunk (by ``SHRINK``, at
    most ``max_shrinks`` times) and placed again while more than ``MAX_CLIPPED`` of it would fall in lung,
    bone, outside the anterior mediastinum or outside the scan's field of view. ``contrast`` is the
    background's phase (``none``, ``venous``, ``arterial``); ``None`` estimates it from the blood HU of its
    great vessels. ``mass_effect`` pushes the tissue under the tumour aside (:func:`displace`) instead of
    overwriting it. Raises :class:`InsertionRejected` with the reason when it
    never fits, or when the result fails a check (location, volume, contrast with its neighbourhood).
    """
    from amt_core.synth.tumour import CONTRAST_FACTOR, LOOKS, lesion_radii, primary_lesion

    if histology not in LOOKS:
        raise ValueError(f"unknown histology {histology!r}; choose one of {', '.join(LOOKS)}")
    if contrast is not None and contrast not in CONTRAST_FACTOR:
        raise ValueError(f"unknown contrast {contrast!r}; choose one of {', '.join(CONTRAST_FACTOR)}")
    bg = np.asarray(image, dtype=F32)
    sp = np.asarray(spacing, float)
    affine = np.diag([*sp, 1.0]) if affine is None else np.asarray(affine, float)
    if anatomy is None:
        anatomy = find_prevascular_space(bg, sp, source)
    voxel_ml = float(np.prod(sp)) / 1000.0
    blood = blood_hu(bg, anatomy)
    phase = contrast_phase(blood) if contrast is None else contrast
    k_contrast = CONTRAST_FACTOR[phase] * enhancement
    look = dict(LOOKS[histology])
    diam = float(diameter_mm)
    # where the background is lung or bone, the tumour keeps out: the voxel's air or bone fraction (bone:
    # bright voxels at the skeleton; an enhanced vessel does not stop it, it is pushed aside)
    f_air = np.clip((F32(-100.0) - bg) / F32(750.0), 0, 1)
    skeleton = ndimage.binary_dilation(anatomy.bone, structure=np.ones((3, 3, 3), bool))
    f_bone = np.clip((bg - F32(150.0)) / F32(250.0), 0, 1) * skeleton
    # and outside the front half of the mediastinum (chest wall, neck, abdomen; the heart, the trachea
    # and the great vessels behind it) it is cut off: it abuts them
    inside = ndimage.binary_dilation(anatomy.anterior, structure=np.ones((3, 3, 1), bool))
    keep = (F32(1.0) - np.maximum(f_air, f_bone)) * inside
    shrinks = 0
    while True:
        radii = lesion_radii(rng, diam)
        les = primary_lesion(rng, look, _place(anatomy, radii, rng), radii)
        margin = (look["amp"] + look["rough"]) * radii.max() * 2.5 + 2.0 * sp.max()
        lo, hi = les.box(margin)
        full = tuple(
            slice(int(np.floor(a / s)), int(np.ceil(b / s)) + 1) for a, b, s in zip(lo, hi, sp, strict=True)
        )
        box = tuple(slice(max(0, f.start), min(n, f.stop)) for f, n in zip(full, bg.shape, strict=True))
        occ, val, outside = _in_scan(sp, full, box, les, k_contrast, rng)
        occ_c = occ * keep[box]
        planned = float(occ.sum()) + outside  # the part outside the scan is clipped too
        clipped = 1.0 - float(occ_c.sum()) / max(planned, 1e-6)
        if clipped <= MAX_CLIPPED:
            break
        if shrinks >= max_shrinks:
            where = _clipped_by(occ, box, f_air, f_bone, inside, outside)
            named = ", ".join(f"{n} {v / planned:.0%}" for n, v in where.items() if v > 0.01 * planned)
            raise InsertionRejected(
                f"{histology} of {diameter_mm:.0f} mm does not fit the prevascular space: "
                f"{clipped:.0%} of it is clipped ({named or 'nowhere over 1%'}) even at {diam:.0f} mm "
                f"(limit {MAX_CLIPPED:.0%})",
                source,
            )
        shrinks += 1
        diam *= SHRINK
    # fragments of the label smaller than a lesion leave neither label nor tumour intensity behind
    occ_c, label_box, dropped = fragment_free(occ_c, sp)
    sd = noise_sd(bg, anatomy)
    out = bg.copy()
    shift = 0.0
    own = np.random.default_rng(rng.integers(2**63))  # the same draws after it with or without mass effect
    if mass_effect and label_box.any():
        region, moved, shift = displace(bg, occ_c, box, anatomy, sd, own)
        out[region] = moved
    noise = ndimage.gaussian_filter(rng.standard_normal(occ.shape).astype(F32), (0.5, 0.5, 0.0))
    noise *= F32(sd / max(float(noise.std()), 1e-6))
    out[box] = out[box] * (F32(1.0) - occ_c) + (val + noise) * occ_c
    label = np.zeros(bg.shape, np.uint8)
    label[box] = label_box
    record = _check(
        out,
        label,
        anatomy,
        histology,
        diameter_mm,
        diam,
        shrinks,
        planned * voxel_ml,
        clipped,
        _clipped_by(occ, box, f_air, f_bone, inside, outside),
        planned,
        sd,
        affine,
        source,
    )
    record.replaced_fat_fraction = round(float((bg[label > 0] < -30.0).mean()), 3)
    record.max_shift_mm = round(shift, 1)
    record.dropped_fragment_ml = round(dropped * voxel_ml, 3)
    record.contrast = phase
    record.contrast_from = "given" if contrast is not None else "estimated from the blood HU"
    record.blood_hu = blood
    if blood is not None:
        record.blood_contrast_hu = round(float(np.median(out[label > 0])) - blood, 1)
    return out, label, record


def _clipped_by(occ, box, f_air, f_bone, inside, outside: float) -> dict[str, float]:
    """Where the planned tumour (occupancy ``occ`` over ``box``, and ``outside`` voxels beyond the scan) is
    clipped, in voxels: lung, bone, outside the anterior mediastinum, outside the field of view (they may
    overlap: a voxel of lung outside the mediastinum counts for both)."""
    return {
        "lung": float((f_air[box] * occ).sum()),
        "bone": float((f_bone[box] * occ).sum()),
        "outside the anterior mediastinum": float((~inside[box] * occ).sum()),
        "outside the field of view": float(outside),
    }


def _check(
    out,
    label,
    anatomy: ChestAnatomy,
    histology,
    planned_diam,
    diam,
    shrinks,
    planned_ml,
    clipped,
    clipped_by: dict,
    planned,
    sd,
    affine,
    source,
) -> InsertionRecord:
    """The checks of an inserted tumour; raises :class:`InsertionRejected` naming the first that fails."""
    sp = np.asarray(anatomy.spacing)
    volume_ml = float(label.sum()) * float(np.prod(sp)) / 1000.0
    if volume_ml == 0:
        raise InsertionRejected("the tumour's label is empty", source)
    lo, hi = planned_ml * (1.0 - MAX_CLIPPED - VOLUME_TOLERANCE), planned_ml * (1.0 + VOLUME_TOLERANCE)
    if not lo <= volume_ml <= hi:
        raise InsertionRejected(
            f"label volume {volume_ml:.1f} ml outside {lo:.1f}..{hi:.1f} ml of the planned "
            f"{planned_ml:.1f} ml",
            source,
        )
    c = np.argwhere(label > 0).mean(axis=0)
    ci = tuple(int(round(v)) for v in c)
    if not anatomy.body[ci]:
        raise InsertionRejected(f"tumour centroid {ci} outside the body", source)
    if anatomy.lungs[ci] or anatomy.bone[ci]:
        raise InsertionRejected(f"tumour centroid {ci} in {'lung' if anatomy.lungs[ci] else 'bone'}", source)
    med = ndimage.binary_dilation(
        anatomy.mediastinum[:, :, ci[2]] | anatomy.space[:, :, ci[2]], iterations=max(1, round(10.0 / sp[0]))
    )
    if not med[ci[0], ci[1]]:
        raise InsertionRejected(f"tumour centroid {ci} not in the mediastinum (between the lungs)", source)
    ys = np.flatnonzero(anatomy.mediastinum[:, :, ci[2]].any(axis=0))
    if ys.size == 0 or c[1] < 0.5 * (ys.min() + ys.max()):
        raise InsertionRejected(
            f"tumour centroid {ci} not anterior to the great vessels (in the posterior half "
            "of the mediastinum)",
            source,
        )
    t = label > 0
    shell = (
        ndimage.binary_dilation(
            t, iterations=max(1, round(SHELL_MM / sp[0])), structure=np.ones((3, 3, 1), bool)
        )
        & ~t
        & anatomy.body
        & ~anatomy.lungs
    )
    tumour_hu = float(out[t].mean())
    shell_hu = float(out[shell].mean()) if shell.any() else float("nan")
    contrast = tumour_hu - shell_hu
    if not abs(contrast) >= MIN_CONTRAST_HU:
        raise InsertionRejected(
            f"contrast with the neighbourhood {contrast:+.0f} HU (tumour {tumour_hu:.0f}, shell "
            f"{shell_hu:.0f}) below the minimum {MIN_CONTRAST_HU:g} HU",
            source,
        )
    outline = outline_composition(out, label, sp)
    pos = (affine @ np.array([*c, 1.0]))[:3]
    return InsertionRecord(
        histology=histology,
        planned_diameter_mm=round(float(planned_diam), 1),
        diameter_mm=round(float(diam), 1),
        shrinks=int(shrinks),
        position_mm=[round(float(v), 1) for v in pos],
        position_voxel=[round(float(v), 1) for v in c],
        planned_volume_ml=round(planned_ml, 2),
        volume_ml=round(volume_ml, 2),
        clipped_fraction=round(float(clipped), 3),
        clipped_at="+".join(n for n, v in clipped_by.items() if v > 0.01 * planned) or "none",
        contrast_hu=round(contrast, 1),
        tumour_hu=round(tumour_hu, 1),
        shell_hu=round(shell_hu, 1),
        noise_hu=round(float(sd), 1),
        border_contrast=round(outline["border_contrast"], 3),
        border_lung=round(outline["lung"], 3),
    )


def outline_composition(image: np.ndarray, label: np.ndarray, spacing) -> dict:
    """What lies around a tumour, as shares of the in-plane shell ``SHELL_MM`` around its label (3 x 3 median
    HU): ``border_contrast``, the share that differs from the tumour's median HU by ``MIN_CONTRAST_HU`` or
    more (what a reader sees of its outline: fat, lung, bone or enhanced blood beside it; not the unenhanced
    heart or vessels), and of which ``lung`` (below ``LUNG_HU``) and ``fat`` (up to ``FAT_HU``); and
    ``like_tumour``, the share within ``MIN_CONTRAST_HU`` of it (= 1 - border_contrast)."""
    t = label > 0
    it = max(1, round(SHELL_MM / float(spacing[0])))
    shell = ndimage.binary_dilation(t, iterations=it, structure=np.ones((3, 3, 1), bool)) & ~t
    v = ndimage.median_filter(np.asarray(image, dtype=F32), size=(3, 3, 1))[shell]
    like = np.abs(v - np.median(image[t])) < MIN_CONTRAST_HU
    return {
        "border_contrast": float(1.0 - like.mean()),
        "lung": float((v < LUNG_HU).mean()),
        "fat": float(((v >= LUNG_HU) & (v < FAT_HU)).mean()),
        "like_tumour": float(like.mean()),
    }


def record_dict(record: InsertionRecord) -> dict:
    return asdict(record)
