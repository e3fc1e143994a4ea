"""Anterior mediastinal tumours inserted into real, tumour-free chest CT.

``find_prevascular_space`` reads the anatomy from the HU alone: the body (largest component above
-500 HU), the aerated lungs (large air components inside the body), bone, the sternum (bone in the
anterior midline) and, between the lungs, the mediastinum. The prevascular space is its anterior part,
behind the sternum and in front of the great vessels and the heart, at the levels from the upper heart
(below it the heart fills the mediastinum: the level where the mediastinum is widest) up to the top of
the sternum; its voxels are fat or soft tissue, never lung or bone.

``insert_tumour`` places one histology-driven mass there with the synthetic cohort's own tumour model
(:mod:`amt_core.synth.tumour`: shape, lobulation, margin, texture, cyst, necrosis, fat, calcification by
histology), evaluated on a grid supersampled to about 1 mm and averaged back (partial-volume edges). The
tumour replaces mediastinal fat and soft tissue; where it would enter aerated lung or bone it is clipped
(the voxel's air or bone fraction is kept), and when too much of it would be clipped it is shrunk and
placed again (the record says how often). The label is every voxel the clipped tumour fills to at least
one half. Scanner noise matched to the background's is added inside the tumour. Each insertion is
checked (location, volume, contrast with a shell around it) and refused with :class:`InsertionRejected`
naming the reason. Deterministic from the ``numpy`` generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from amt_core.synth.canvas import F32, Canvas

#: the bundled backgrounds (downsampled real chest CT, with their licences and SOURCES.md)
BUNDLE_DIR = Path(__file__).resolve().parent / "chest_backgrounds"
#: HU below which a voxel inside the body is aerated (lung, airway)
AIR_HU = -500.0
#: HU above which a voxel is bone (or dense calcification)
BONE_HU = 250.0
#: HU above which a voxel in the anterior midline is the sternum
STERNUM_HU = 150.0
#: an aerated component smaller than this (ml) is not a lung (airway, bowel gas)
MIN_LUNG_ML = 50.0
#: the checks an inserted tumour must pass
MAX_CLIPPED = 0.30  # fraction of the planned tumour that may be clipped at lung or bone
VOLUME_TOLERANCE = 0.35  # label volume within planned x (1 - MAX_CLIPPED - this, 1 + this)
MIN_CONTRAST_HU = 15.0  # |mean HU(tumour) - mean HU(shell around it)|, the shell without lung
SHELL_MM = 5.0
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
    planned_volume_ml: float  # the unclipped tumour (sum of occupancies)
    volume_ml: float  # the label
    clipped_fraction: float  # of the planned tumour, at lung or bone
    clipped_at: (
        str  # "none" or what cut it: "lung", "bone", "outside the anterior mediastinum", joined by "+"
    )
    contrast_hu: float  # mean HU of the tumour minus that of a shell around it (lung excluded)
    tumour_hu: float
    shell_hu: float
    noise_hu: float  # the background's noise, added inside the tumour
    replaced_fat_fraction: float = float("nan")  # of the label, voxels that were fat (< -30 HU) before


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
    bone = (smooth > BONE_HU) & body
    nx, ny, nz = hu.shape
    xs = np.arange(nx)
    mediastinum = np.zeros_like(body)
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
        # cancellous bone: a lower threshold than ``BONE_HU``)
        band = np.abs(xs - xm) * sp[0] < 25.0
        bone_rows = np.flatnonzero((hu[band, :, k] > STERNUM_HU).any(axis=0) & body[band, :, k].any(axis=0))
        front = bone_rows[bone_rows > rows.max() - 10.0 / sp[1]]
        st = int(front.min()) if front.size else -1  # back of the sternum (RAS: y grows anteriorly)
        # spine: bone in the midline band behind the lungs' posterior half
        back = bone_rows[bone_rows < rows.min() + 0.5 * (rows.max() - rows.min())]
        y_spine = int(back.max()) if back.size else int(rows.min())
        y_front = st if st >= 0 else int(rows.max()) + 1
        for j in range(y_spine + 1, y_front):
            if left[j] >= 0 and right[j] < nx:
                mediastinum[left[j] + 1 : right[j], j, k] = True
            elif j > rows.max():  # in front of the lungs' anterior tips up to the sternum
                lo, hi = int(left[rows.max()]), int(right[rows.max()])
                mediastinum[lo + 1 : hi, j, k] = True
        sternum_y[k] = st
        mid = (y_spine + y_front) // 2
        y_mid[k] = mid
        width[k] = float(np.count_nonzero(mediastinum[:, mid, k] & ~lungs[:, mid, k])) * sp[0]
    mediastinum &= body & ~lungs & ~bone
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
    contrast: str = "none",
    enhancement: float = 1.0,
    anatomy: ChestAnatomy | None = None,
    affine: np.ndarray | None = None,
    source: str = "background",
    max_shrinks: int = MAX_SHRINKS,
):
    """Insert one anterior mediastinal tumour into a tumour-free chest CT (HU, RAS voxel order).

    Returns ``(image float32 HU, label uint8, InsertionRecord)``. The tumour is shrunk (by ``SHRINK``, at
    most ``max_shrinks`` times) and placed again while more than ``MAX_CLIPPED`` of it would fall in lung
    or bone. Raises :class:`InsertionRejected` with the reason when it never fits, or when the result
    fails a check (location, volume, contrast with its neighbourhood).
    """
    from amt_core.synth.tumour import CONTRAST_FACTOR, LOOKS, drop_fragments, lesion_radii, primary_lesion

    if histology not in LOOKS:
        raise ValueError(f"unknown histology {histology!r}; choose one of {', '.join(LOOKS)}")
    bg = np.asarray(image, dtype=F32)
    sp = np.asarray(spacing, float)
    affine = np.diag([*sp, 1.0]) if affine is None else np.asarray(affine, float)
    if anatomy is None:
        anatomy = find_prevascular_space(bg, sp, source)
    voxel_ml = float(np.prod(sp)) / 1000.0
    k_contrast = CONTRAST_FACTOR[contrast] * enhancement
    look = dict(LOOKS[histology])
    diam = float(diameter_mm)
    # where the background is lung or bone, the tumour keeps out: the voxel's air or bone fraction
    f_air = np.clip((F32(-100.0) - bg) / F32(750.0), 0, 1)
    f_bone = np.clip((bg - F32(150.0)) / F32(250.0), 0, 1)
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
        box = tuple(
            slice(max(0, int(np.floor(a / s))), min(n, int(np.ceil(b / s)) + 1))
            for a, b, s, n in zip(lo, hi, sp, bg.shape, strict=True)
        )
        occ, val = _supersampled(sp, box, les, k_contrast, rng)
        occ_c = occ * keep[box]
        planned = float(occ.sum())
        clipped = 1.0 - float(occ_c.sum()) / max(planned, 1e-6)
        if clipped <= MAX_CLIPPED:
            break
        if shrinks >= max_shrinks:
            raise InsertionRejected(
                f"{histology} of {diameter_mm:.0f} mm does not fit the prevascular space: "
                f"{clipped:.0%} of it falls in lung, bone or outside the anterior mediastinum even "
                f"at {diam:.0f} mm "
                f"(limit {MAX_CLIPPED:.0%})",
                source,
            )
        shrinks += 1
        diam *= SHRINK
    sd = noise_sd(bg, anatomy)
    noise = ndimage.gaussian_filter(rng.standard_normal(occ.shape).astype(F32), (0.5, 0.5, 0.0))
    noise *= F32(sd / max(float(noise.std()), 1e-6))
    out = bg.copy()
    out[box] = bg[box] * (F32(1.0) - occ_c) + (val + noise) * occ_c
    label = np.zeros(bg.shape, np.uint8)
    label[box] = (occ_c >= 0.5).astype(np.uint8)
    label = drop_fragments(label, sp)
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
        {
            "lung": (f_air[box] * occ).sum(),
            "bone": (f_bone[box] * occ).sum(),
            "outside the anterior mediastinum": (~inside[box] * occ).sum(),
        },
        planned,
        sd,
        affine,
        source,
    )
    record.replaced_fat_fraction = round(float((bg[label > 0] < -30.0).mean()), 3)
    return out, label, record


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
    )


def record_dict(record: InsertionRecord) -> dict:
    return asdict(record)
