"""Anterior mediastinal tumours: placement in the prevascular space, lobulated irregular shape, and an
appearance that follows the histology.

A lesion is a union of ellipsoids (a main body plus lobules) whose signed distance is displaced by
low-frequency noise (lobulation) and, for invasive histologies, by higher-frequency noise (irregular
margins). It is clipped to the inside of the rib cage, so it sits behind the sternum, and pushes the
heart and great vessels back (mass effect, applied to their centre lines before they are drawn).
Its HU overlaps muscle, unenhanced blood, lymph nodes and the young thymus, so a threshold alone
cannot find it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amt_core.synth.anatomy import Patient, cavity_ab, cavity_sdf
from amt_core.synth.canvas import (
    F32,
    Canvas,
    ellipsoid_box,
    ellipsoid_sdf,
    paint_ellipsoid,
    rotation,
    shape_of,
    smooth_noise,
)

#: appearance per histology. base: plain-CT HU; enh: venous-phase increment; tex: heterogeneity (HU sd);
#: lobes: extra lobules (min, max); amp: lobulation (fraction of radius); rough: invasive margin;
#: necrosis / calc: probability of necrotic-cystic change / calcification; fat: teratoma fat; cyst: fluid.
LOOKS: dict[str, dict] = {
    "thymoma_A": dict(base=42, enh=28, tex=5, lobes=(0, 1), amp=0.06, rough=0.0, necrosis=0.05, calc=0.03),
    "thymoma_AB": dict(base=42, enh=30, tex=8, lobes=(1, 2), amp=0.10, rough=0.0, necrosis=0.10, calc=0.05),
    "thymoma_B1": dict(base=40, enh=28, tex=8, lobes=(1, 3), amp=0.12, rough=0.02, necrosis=0.10, calc=0.08),
    "thymoma_B2": dict(base=40, enh=30, tex=10, lobes=(1, 3), amp=0.15, rough=0.04, necrosis=0.25, calc=0.12),
    "thymoma_B3": dict(base=40, enh=28, tex=12, lobes=(2, 4), amp=0.18, rough=0.08, necrosis=0.35, calc=0.20),
    "thymic_carcinoma": dict(
        base=38, enh=30, tex=14, lobes=(2, 4), amp=0.20, rough=0.14, necrosis=0.55, calc=0.15
    ),
    "lymphoma": dict(base=44, enh=22, tex=6, lobes=(2, 5), amp=0.15, rough=0.03, necrosis=0.10, calc=0.0),
    "germ_cell_tumour": dict(
        base=35, enh=20, tex=18, lobes=(1, 3), amp=0.12, rough=0.03, necrosis=0.40, calc=0.45, fat=0.6
    ),
    "thymic_cyst": dict(
        base=12, enh=0, tex=4, lobes=(0, 1), amp=0.05, rough=0.0, necrosis=0.0, calc=0.05, cyst=True
    ),
    "other": dict(base=40, enh=25, tex=10, lobes=(0, 3), amp=0.12, rough=0.05, necrosis=0.2, calc=0.1),
}
CONTRAST_FACTOR = {"none": 0.0, "venous": 1.0, "arterial": 0.75}


@dataclass
class Lesion:
    center: np.ndarray
    radii: np.ndarray
    rot: np.ndarray
    lobes: list = field(default_factory=list)  # (centre, radii)
    look: dict = field(default_factory=dict)
    kind: str = "primary"  # primary | nodule | pleural

    def box(self, margin: float):
        los, his = [], []
        for c, r in [(self.center, self.radii)] + self.lobes:
            lo, hi = ellipsoid_box(c, r, self.rot)
            los.append(lo)
            his.append(hi)
        return np.min(los, 0) - margin, np.max(his, 0) + margin


def lesion_radii(rng: np.random.Generator, diameter_mm: float) -> np.ndarray:
    """Semi-axes (x, y, z) of a lesion's main body whose largest diameter is ``diameter_mm``; the
    antero-posterior axis is the shortest (masses are flattened behind the sternum)."""
    R = diameter_mm / 2.0
    radii = R * np.array([rng.uniform(0.75, 1.0), rng.uniform(0.5, 0.8), rng.uniform(0.75, 1.0)])
    return radii * (R / radii.max())


def primary_lesion(rng: np.random.Generator, look: dict, center: np.ndarray, radii: np.ndarray) -> Lesion:
    """The primary mass at ``center``: a small random tilt and the histology's lobules around its body."""
    rot = rotation(yaw=rng.normal(0, 0.3), roll=rng.normal(0, 0.15))
    center = np.asarray(center, float)
    lobes = []
    n_lobes = int(rng.integers(look["lobes"][0], look["lobes"][1] + 1))
    for _ in range(n_lobes):
        u = rng.normal(0, 1, 3)
        u[1] = 0.3 * abs(u[1])  # lobules spread sideways and up/down, not backwards
        u /= np.linalg.norm(u)
        lobes.append((center + rot @ (u * radii * rng.uniform(0.45, 0.7)), radii * rng.uniform(0.4, 0.65)))
    return Lesion(center, radii, rot, lobes, look, "primary")


def plan_lesions(
    rng: np.random.Generator, p: Patient, histology: str, diameter_mm: float, n_lesions: int
) -> list[Lesion]:
    """Where and how big each lesion is (the first is the primary prevascular mass)."""
    look = dict(LOOKS[histology])
    s = p.s
    radii = lesion_radii(rng, diameter_mm)
    # keep lesions inside the chest: very large masses fill the anterior mediastinum and bulge laterally
    radii[1] = min(radii[1], 0.5 * p.cav_b)
    x = p.cx + float(np.clip(rng.normal(-4.0, 10.0) * s, -0.3 * p.cav_a, 0.3 * p.cav_a))
    # the thymic bed: from the great vessels down over the upper heart (the levels where tumours are inserted
    # into real CT, backgrounds.LEVELS_MM), so that some masses abut the pericardium with no fat between
    z = p.z_arch - 30.0 * s + rng.normal(0.0, 20.0) * s
    z = float(np.clip(z, p.z_dome_r + 0.6 * radii[2] + 10.0, p.z_apex - 20.0 * s - radii[2]))
    # anterior margin against the back of the sternum (the rib cage narrows towards the apex)
    _, b_z = cavity_ab(p, np.float32(z))
    y = p.cy + float(b_z) - 0.88 * radii[1] - rng.uniform(0.0, 3.0)
    lesions = [primary_lesion(rng, look, np.array([x, y, z]), radii)]
    center, radii = lesions[0].center, lesions[0].radii
    if n_lesions > 1:
        r2 = float(rng.uniform(8.0, 16.0))
        if rng.random() < 0.5:  # pleural implant ("drop metastasis") on the posterior-lateral pleura
            side = rng.choice([-1.0, 1.0])
            psi = rng.uniform(0.15, 0.45) * np.pi
            zz = rng.uniform(p.z_dome_r + 15.0, p.z_carina)
            px, py = p.cx + side * p.cav_a * np.sin(psi), p.cy - p.cav_b * np.cos(psi)
            nrm = np.array([(px - p.cx) / p.cav_a**2, (py - p.cy) / p.cav_b**2, 0.0])
            nrm /= np.linalg.norm(nrm)
            tan = np.array([-nrm[1], nrm[0], 0.0])
            rot2 = np.stack([tan, nrm, [0.0, 0.0, 1.0]], axis=1)
            c2 = np.array([px, py, zz]) - nrm * r2 * 0.15
            lesions.append(Lesion(c2, np.array([r2, 0.5 * r2, r2 * 1.1]), rot2, [], look, "pleural"))
        else:  # a separate second prevascular / paracardiac nodule
            side = rng.choice([-1.0, 1.0])
            c2 = center + np.array(
                [side * (radii[0] + r2 + rng.uniform(10, 20)), 0.0, -rng.uniform(0.3, 0.8) * radii[2]]
            )
            c2[1] = p.y_front - 0.9 * r2 * 0.8
            lesions.append(Lesion(c2, np.array([r2, 0.8 * r2, r2]), np.eye(3), [], look, "nodule"))
    return lesions


def mass_effect(lesions: list[Lesion], p: Patient):
    """Displacement of the mediastinal structures caused by the primary mass: (centre, radii, shift)."""
    L = lesions[0]
    ap = 2.0 * L.radii[1]
    push = float(np.clip(0.55 * (ap - 28.0 * p.s), 0.0, 32.0 * p.s))
    if push <= 0:
        return None
    lateral = float(np.clip(0.25 * (L.radii[0] - 25.0), 0.0, 10.0))
    return (L.center, L.radii, np.array([-np.sign(L.center[0] - p.cx + 1e-6) * lateral, -push, 0.0]))


def draw_lesions(
    cv: Canvas, p: Patient, lesions: list[Lesion], contrast: str, enhancement: float, rng: np.random.Generator
) -> np.ndarray:
    """Paint the lesions last; returns the label (uint8, 1 = tumour) on the canvas grid."""
    label = np.zeros(cv.shape, dtype=np.uint8)
    k = CONTRAST_FACTOR[contrast] * enhancement
    for les in lesions:
        field_ = lesion_field(cv, les, k, rng, clip=lambda x, y, z: cavity_sdf(p, x, y, z) + F32(1.0))
        if field_ is None:
            continue
        box, d, val = field_
        occ = cv.occ(d)
        cv.paint(box, occ, val)
        label[box] |= (occ >= 0.5).astype(np.uint8)
        for c, r, v in plan_calcifications(rng, les):
            inside = label[box].astype(F32)
            paint_ellipsoid(cv, c, r, v, mask_fn=lambda b, *_, m=inside, bx=box: _restrict(m, bx, b))
    return drop_fragments(label, cv.spacing)


def lesion_field(cv: Canvas, les: Lesion, k: float, rng: np.random.Generator, clip=None):
    """Shape and appearance of one lesion on ``cv``: (box, signed distance in mm, HU), or None off the grid.

    ``k`` is the contrast factor (``CONTRAST_FACTOR[contrast] * enhancement``); ``clip(x, y, z)``, if given,
    is a signed distance the lesion must stay inside of. The histology's look sets the lobulation, the
    invasive margin, the texture, and cystic, necrotic and fatty change.
    """
    look = les.look
    R = float(les.radii.max())
    r_min = float(les.radii.min())  # displacement scales with the thinnest axis: no shredding
    margin = (look["amp"] + look["rough"]) * R * 2.5 + 2 * cv.edge
    lo, hi = les.box(margin)
    box = cv.box(lo, hi)
    if box is None:
        return None
    shp = shape_of(box)
    x, y, z = cv.coords(box)
    d = ellipsoid_sdf(x, y, z, les.center, les.radii, les.rot)
    for c, r in les.lobes:
        np.minimum(d, ellipsoid_sdf(x, y, z, c, r, les.rot), out=d)
    ext = np.asarray(hi) - np.asarray(lo)
    if look["amp"] > 0:
        cells = np.clip(ext / max(R * 0.9, 6.0), 2, 6).astype(int) + 1
        d += F32(look["amp"] * r_min) * np.clip(smooth_noise(rng, shp, cells), -2.0, 2.0)
    if look["rough"] > 0:
        cells = np.clip(ext / 9.0, 3, 16).astype(int)
        d += F32(look["rough"] * r_min) * np.clip(smooth_noise(rng, shp, cells), -2.0, 2.0)
    # a solid core survives any displacement: one connected lesion, never shredded
    np.minimum(d, ellipsoid_sdf(x, y, z, les.center, les.radii * 0.6, les.rot), out=d)
    if clip is not None:
        d = np.maximum(d, clip(x, y, z))
    # appearance
    base = look["base"] + rng.normal(0.0, 5.0) + look["enh"] * k * rng.uniform(0.7, 1.3)
    cells = np.clip(ext / 12.0, 2, 12).astype(int)
    val = F32(base) + F32(look["tex"]) * smooth_noise(rng, shp, cells)
    inner = np.clip(-d / F32(0.3 * R + 1e-3), 0, 1)
    if look.get("cyst"):
        wall = np.clip(F32(1.0) + d / F32(2.5), 0, 1)
        val = val * (F32(1.0) - wall) + F32(35.0 + 20 * k) * wall
    if rng.random() < look["necrosis"]:
        nec = smooth_noise(rng, shp, np.clip(ext / 15.0, 2, 8).astype(int))
        mix = np.clip((nec - F32(0.3)) / F32(0.5), 0, 1) * inner
        val = val * (F32(1.0) - mix) + F32(rng.uniform(5, 25)) * mix
    if look.get("fat") and rng.random() < look["fat"]:
        fat = smooth_noise(rng, shp, np.clip(ext / 12.0, 2, 8).astype(int))
        mix = np.clip((fat - F32(0.6)) / F32(0.4), 0, 1) * inner
        val = val * (F32(1.0) - mix) + F32(-90.0) * mix
    return box, d, val


def plan_calcifications(rng: np.random.Generator, les: Lesion) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Calcifications of a lesion by its histology's rate: (centre, radii, HU) each; painted inside it."""
    out = []
    if rng.random() < les.look["calc"]:
        for _ in range(int(rng.integers(1, 6))):
            u = rng.uniform(-0.6, 0.6, 3)
            c = les.center + les.rot @ (u * les.radii)
            out.append((c, rng.uniform(1.5, 4.0, 3), float(rng.uniform(300, 900))))
    return out


#: label components smaller than this (ml) are margin fragments, not lesions (the largest is always kept)
MIN_LESION_ML = 0.15


def drop_fragments(label: np.ndarray, spacing, min_ml: float = MIN_LESION_ML) -> np.ndarray:
    """Remove tiny disconnected pieces (26-connectivity) so every component is a real lesion."""
    from scipy import ndimage

    comp, n = ndimage.label(label, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return label
    sizes = np.bincount(comp.ravel())[1:]
    min_vox = max(1, int(np.ceil(min_ml * 1000.0 / float(np.prod(spacing)))))
    keep = sizes >= min_vox
    keep[int(np.argmax(sizes))] = True
    lut = np.concatenate([[0], keep.astype(np.uint8)])
    return lut[comp].astype(np.uint8)


def _restrict(inside: np.ndarray, box, b):
    """The part of ``inside`` (defined on ``box``) on sub-box ``b``; zero where ``b`` leaves ``box``."""
    out = np.zeros(tuple(s.stop - s.start for s in b), dtype=F32)
    lo = [max(s.start, t.start) for s, t in zip(b, box, strict=True)]
    hi = [min(s.stop, t.stop) for s, t in zip(b, box, strict=True)]
    if any(h <= l_ for l_, h in zip(lo, hi, strict=True)):
        return out
    dst = tuple(slice(l_ - s.start, h - s.start) for l_, h, s in zip(lo, hi, b, strict=True))
    src = tuple(slice(l_ - t.start, h - t.start) for l_, h, t in zip(lo, hi, box, strict=True))
    out[dst] = inside[src]
    return out
