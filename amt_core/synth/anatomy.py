"""Per-patient thoracic anatomy drawn on a :class:`~amt_core.synth.canvas.Canvas`.

World frame: RAS millimetres (x towards the patient's right, y anterior, z superior); z = 0 is the top
of the right hemidiaphragm. Every structure is placed from a handful of landmarks (body centre, inner
rib-cage ellipse, diaphragm domes, carina and aortic-arch heights) that scale with the patient's size
and vary with sex and age. Drawing order encodes anatomy: later structures replace earlier ones;
:func:`draw_anatomy` calls one painter per structure (``_draw_table`` ... ``_draw_clavicles``) in that order.

Calibrated against real chest CT (``tests/test_synth_realism.py``, measured alike on ../shared/realdata): lung
parenchyma with a gravity gradient and fissures, a pulmonary artery and vein tree branching by Murray's law
down to half a millimetre (thin vessels at their true partial volume), bone HU of cortex over marrow at the
scan's resolution. The body outline is a superellipse (fat gathering at the flanks), a fifth of patients
have their arms down (with the humeri's beam-hardening streak), the spine has a kyphosis.

Since GENERATOR_VERSION 3 the scan reaches 35-80 mm below the right dome into the upper abdomen, as real
chest CT does (liver with its veins and left lobe, stomach, spleen, colon, crura, kidneys' upper poles, the
lungs' posterior recesses behind them), the thoracic inlet is narrow (the apices capped by a little fat, the
visceral column between them, neck and shoulder muscles with fat planes, axillary fat, the thyroid's lower
poles), and the organs' unenhanced HU vary per patient (haematocrit, a fatty liver in a quarter of adults):
real chest CT's false-positive sites for a model that saw none of this (``benchmarks/RESULTS.md``).
Since GENERATOR_VERSION 4 the heart rests on the diaphragm (:func:`heart_on_diaphragm`): no lung between heart
and liver, and a cardiothoracic ratio of 0.40-0.48, where it floated 20-30 mm above it before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amt_core.synth.canvas import (
    F32,
    Canvas,
    bezier,
    ellipsoid_box,
    ellipsoid_sdf,
    paint_ellipsoid,
    paint_tube,
    rotation,
    shape_of,
    smooth_noise,
    splat_segments,
)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# --- tissue attenuation -----------------------------------------------------------------------------------
#: HU by tissue: (plain, venous phase, arterial phase); the contrast increment is scaled per scan
TISSUE_HU: dict[str, tuple[float, float, float]] = {
    "fat": (-100.0, -95.0, -98.0),
    "muscle": (45.0, 58.0, 52.0),
    "aorta": (40.0, 165.0, 320.0),
    "vein": (40.0, 150.0, 110.0),
    "svc": (40.0, 160.0, 480.0),  # dense inflow of the injected bolus in the arterial phase
    "pa": (40.0, 160.0, 270.0),
    "heart_left": (40.0, 160.0, 300.0),
    "heart_right": (40.0, 155.0, 240.0),
    "myocardium": (45.0, 110.0, 95.0),
    "liver": (55.0, 110.0, 75.0),
    "spleen": (48.0, 120.0, 130.0),
    "node": (38.0, 70.0, 58.0),
    "thymus": (35.0, 55.0, 48.0),
    "fluid": (8.0, 10.0, 9.0),
    "csf": (10.0, 10.0, 10.0),
    "lung_vessel": (40.0, 150.0, 220.0),
    "gland": (-20.0, -5.0, -10.0),
    "kidney": (32.0, 150.0, 175.0),  # renal cortex
    "bowel_wall": (40.0, 85.0, 70.0),
    "thyroid": (100.0, 140.0, 150.0),  # iodine-rich: bright even without contrast
}
#: the blood entries of ``TISSUE_HU``: their unenhanced HU follows the patient's haematocrit
BLOOD = ("aorta", "vein", "svc", "pa", "heart_left", "heart_right", "lung_vessel")
#: fraction of adults with a fatty liver (hepatic steatosis; unenhanced liver below about 40 HU)
STEATOSIS = 0.25
PHASE_INDEX = {"none": 0, "venous": 1, "arterial": 2}


def tissue_table(contrast: str, enhancement: float, age: float, rng: np.random.Generator) -> dict[str, float]:
    """HU of every tissue for one scan (contrast phase, bolus strength, age, small patient variation)."""
    k = PHASE_INDEX[contrast]
    # the patient's own unenhanced HU: blood with the haematocrit (anaemia lowers it), a fatty liver in a
    # quarter of adults, the spleen; the contrast increment comes on top of it
    plain = {name: vals[0] for name, vals in TISSUE_HU.items()}
    blood = float(np.clip(rng.normal(42.0, 5.0), 28.0, 58.0))
    for name in BLOOD:
        plain[name] = blood
    fatty = rng.random() < STEATOSIS
    plain["liver"] = float(rng.uniform(15.0, 42.0)) if fatty else float(rng.normal(57.0, 5.0))
    plain["spleen"] = float(rng.normal(47.0, 4.0))
    out = {}
    for name, vals in TISSUE_HU.items():
        out[name] = plain[name] + (vals[k] - vals[0]) * enhancement
    out["fat"] += rng.normal(0.0, 6.0)
    out["muscle"] += rng.normal(0.0, 4.0)
    out["lung"] = float(rng.uniform(-910.0, -860.0))
    out["cancellous"] = float(np.clip(265.0 - 2.0 * (age - 30.0) + rng.normal(0, 20), 110.0, 320.0))
    out["cortex"] = float(rng.uniform(900.0, 1250.0))  # cortical bone (thin: partial volume lowers it)
    out["cartilage"] = float(np.clip(90.0 + 3.0 * (age - 30.0) + rng.normal(0, 25), 60.0, 350.0))
    out["airway"] = -990.0
    # thymus: soft tissue in the young, replaced by fat with age
    f = float(_sig((age - 32.0) / 7.0))
    out["thymus"] = (1.0 - f) * out["thymus"] + f * (out["fat"] + 25.0)
    return out


# --- the patient ---------------------------------------------------------------------------------------------
#: fat between a lowered arm and the chest wall, mm
ARM_GAP_MM = 12.0


@dataclass
class Patient:
    sex: str
    age: float
    s: float  # size scale
    cx: float
    cy: float  # cavity centre (x, y)
    cav_a: float
    cav_b: float
    wall: float
    m_ant: float
    m_post: float
    m_lat: float
    fat: float
    z_dome_r: float
    z_dome_l: float
    z_apex: float
    z_arch: float
    z_carina: float
    heart_c: np.ndarray
    heart_r: np.ndarray
    heart_rot: np.ndarray
    breast: float
    extras: dict = field(default_factory=dict)

    # derived landmarks
    @property
    def y_front(self) -> float:  # inner surface of the anterior chest wall
        return self.cy + self.cav_b

    @property
    def y_vb(self) -> float:  # vertebral body centre
        return self.cy - self.cav_b + 12.0 * self.s

    @property
    def y_vbf(self) -> float:  # front of the vertebral bodies
        return self.y_vb + 16.0 * self.s

    @property
    def z_top(self) -> float:
        return self.z_apex + 12.0

    @property
    def z_bottom(self) -> float:  # the scan's lower end: how far into the upper abdomen varies
        return self.z_dome_r - self.extras.get("abdomen_mm", 35.0) * self.s

    def body_width(self) -> float:
        """Lateral extent of the body at mid-chest (without the shoulders; with the arms when they are down
        at the sides), mm."""
        width = 2.0 * (self.cav_a + self.wall + self.m_lat + 1.1 * self.fat)
        if self.extras.get("arms_down"):
            width += 4.0 * self.extras["arm_r"] + 2.0 * ARM_GAP_MM
        return width

    def centre(self) -> np.ndarray:
        """A point in the middle of the mediastinum (for placing the field of view)."""
        return np.array([self.cx, self.cy, 0.5 * (self.z_top + self.z_bottom)])


def sample_patient(rng: np.random.Generator, sex: str, age: float, scale: float) -> Patient:
    s = float(scale)
    male = sex == "M"
    cav_a = (134.0 if male else 125.0) * s * rng.uniform(0.94, 1.06)
    cav_b = (84.0 if male else 78.0) * s * rng.uniform(0.92, 1.08) * (1.0 + 0.002 * (age - 50))
    fat = float(np.clip(rng.lognormal(np.log(13.0 if male else 18.0), 0.4) * (1 + 0.004 * (age - 40)), 5, 60))
    muscle_f = (1.25 if male else 1.0) * float(np.clip(1.15 - 0.006 * (age - 30), 0.7, 1.2))
    z_apex = 200.0 * s * rng.uniform(0.92, 1.06)
    z_arch = z_apex - 65.0 * s * rng.uniform(0.9, 1.1)
    heart_len = 62.0 * s * rng.uniform(0.92, 1.08) * (1.0 + 0.002 * (age - 50))
    heart_r = np.array([heart_len, 41.0 * s, 33.0 * s]) * rng.uniform(0.94, 1.06, 3)
    yaw = np.deg2rad(rng.uniform(140, 160))  # long axis points left (-x) and anterior (+y)
    pitch = np.deg2rad(rng.uniform(18, 32))  # and inferior
    heart_rot = rotation(yaw=yaw, pitch=pitch)
    cy = 0.0
    heart_c = np.array([-18.0 * s, cy + cav_b - heart_r[1] * 0.95 - 6.0 * s, 40.0 * s])
    return Patient(
        sex=sex,
        age=float(age),
        s=s,
        cx=0.0,
        cy=cy,
        cav_a=cav_a,
        cav_b=cav_b,
        wall=11.0 * s,
        m_ant=14.0 * s * muscle_f,
        m_post=28.0 * s * muscle_f,
        m_lat=6.0 * s * muscle_f,
        fat=fat,
        z_dome_r=0.0,
        z_dome_l=-14.0 * s * rng.uniform(0.6, 1.4),
        z_apex=z_apex,
        z_arch=z_arch,
        z_carina=z_arch - 22.0 * s,
        heart_c=heart_c,
        heart_r=heart_r,
        heart_rot=heart_rot,
        breast=0.0 if male else float(rng.uniform(0.5, 1.3)),
        extras={
            # body outline: a superellipse (2 = ellipse; larger = squarer, fat gathering at the flanks)
            "shape": float(rng.uniform(2.1, 2.8)),
            # arms at the sides in the scan (most chest CTs are taken with the arms raised, out of view)
            "arms_down": bool(rng.random() < 0.2),
            "arm_r": float(40.0 * s * (1.12 if male else 1.0) * rng.uniform(0.9, 1.1) + 0.4 * fat),
            # how far below the right dome the scan reaches (real chest CT: to the upper poles of the kidneys)
            "abdomen_mm": float(rng.uniform(35.0, 80.0)),
        },
    )


def translate(p: Patient, dx: float, dy: float) -> None:
    p.cx += dx
    p.cy += dy
    p.heart_c = p.heart_c + np.array([dx, dy, 0.0])


# --- geometry helpers ------------------------------------------------------------------------------------------
def _ellipse2d_sdf(x, y, cx, cy, a, b):
    dx, dy = x - F32(cx), y - F32(cy)
    q = np.sqrt((dx / F32(a)) ** 2 + (dy / F32(b)) ** 2) + F32(1e-6)
    return np.sqrt(dx * dx + dy * dy) * (F32(1.0) - F32(1.0) / q)


def diaphragm_z(p: Patient, x, y):
    """Height (mm) of the diaphragm surface under (x, y): two domes, flat on top and steepening towards the
    ribs and the back (the costophrenic recesses), so that a few centimetres below the domes the liver
    and the spleen fill the upper abdomen and the lungs are crescents behind and beside them."""
    s = p.s
    yd = F32(p.cy + 0.2 * p.cav_b)
    out = None
    for z_dome, xc in ((p.z_dome_r, p.cx + 0.42 * p.cav_a), (p.z_dome_l, p.cx - 0.42 * p.cav_a)):
        q = (x - F32(xc)) ** 2 / F32(2 * 90.0 * s) + (y - yd) ** 2 / F32(2 * 75.0 * s)
        z = F32(z_dome) - q - q * q / F32(80.0 * s)
        out = z if out is None else np.maximum(out, z)
    return out


def _superellipse_sdf(x, y, cx, cy, a, b, n: float):
    """Approximate signed distance (mm) to the superellipse |x/a|^n + |y/b|^n = 1 (n = 2: an ellipse)."""
    dx, dy = x - F32(cx), y - F32(cy)
    q = ((np.abs(dx) / F32(a)) ** F32(n) + (np.abs(dy) / F32(b)) ** F32(n)) ** F32(1.0 / n) + F32(1e-6)
    return np.sqrt(dx * dx + dy * dy) * (F32(1.0) - F32(1.0) / q)


def cavity_ab(p: Patient, z):
    """Semi-axes of the inner rib cage at height z: narrower towards the apex."""
    t = np.clip((z - F32(p.z_carina - 30.0 * p.s)) / F32(p.z_apex - p.z_carina + 30.0 * p.s), 0, 1) ** 1.5
    return F32(p.cav_a) * (F32(1.0) - F32(0.36) * t), F32(p.cav_b) * (F32(1.0) - F32(0.2) * t)


def cavity_sdf(p: Patient, x, y, z):
    """Inside of the rib cage (kidney-shaped: the spine indents it posteriorly), capped at the apex."""
    a, b = cavity_ab(p, z)
    d = _ellipse2d_sdf(x, y, p.cx, p.cy, a, b)
    # the vertebral column (and the paravertebral muscles beside it) indent the cavity
    spine = _ellipse2d_sdf(x, y, p.cx, p.y_vb - 8.0 * p.s, 21.0 * p.s, 27.0 * p.s)
    d = np.maximum(d, -spine)
    # the top: a few millimetres of fat over each lung's apex and, between them, the visceral space
    # (trachea, oesophagus, vessels) that goes on into the neck; the neck's muscles around them
    s = p.s
    if np.size(z) == 0 or float(np.max(z)) < p.z_apex - 140.0 * s:  # the caps reach no lower inside it
        return d
    top = None
    for side in (-1.0, 1.0):
        xa, ya = p.cx + side * 0.5 * p.cav_a, p.cy - 0.1 * p.cav_b
        cap = F32(p.z_apex + 6.0) - ((x - F32(xa)) ** 2 + (y - F32(ya)) ** 2) / F32(2 * 42.0 * s)
        top = z - cap if top is None else np.minimum(top, z - cap)
    y_mid = 0.5 * (p.y_front + p.y_vbf)
    column = _ellipse2d_sdf(x, y, p.cx, y_mid, 30.0 * s, 0.5 * (p.y_front - p.y_vbf) + 5.0 * s)
    return np.maximum(d, np.minimum(top, column))


def lung_sdf(p: Patient, x, y, z):
    d = cavity_sdf(p, x, y, z)
    d = np.maximum(d, diaphragm_z(p, x, y) - z)
    # apices: paraboloid caps over each lung
    side = np.where(x >= F32(p.cx), F32(1.0), F32(-1.0))
    xa = F32(p.cx) + side * F32(0.5 * p.cav_a)
    ya = F32(p.cy - 0.1 * p.cav_b)
    cap = F32(p.z_apex) - ((x - xa) ** 2 + (y - ya) ** 2) / F32(2 * 42.0 * p.s)
    d = np.maximum(d, z - cap)
    return d


def apply_mass_effect(points: np.ndarray, push: np.ndarray | None) -> np.ndarray:
    """Displace structure points away from a tumour: ``push`` = (centre, radii, shift vector)."""
    if push is None:
        return points
    c, r, v = push
    pts = np.asarray(points, float)
    q = ((pts - c) / (r + 25.0)) ** 2
    w = np.exp(-q.sum(axis=-1))[..., None]
    return pts + w * v


# --- drawing -------------------------------------------------------------------------------------------------
def draw_anatomy(
    cv: Canvas,
    p: Patient,
    hu: dict[str, float],
    rng: np.random.Generator,
    push=None,
    masks: dict | None = None,
) -> dict:
    """Draw the whole thorax, one painter per structure in anatomical order (later ones replace earlier
    ones). Returns landmarks needed later; if ``masks`` is a dict, fills it with boolean masks of pure
    tissue (lung, fat, muscle, heart, vertebral bone) for realism checks."""
    info: dict = {}
    trunk = _trunk(cv, p)
    _draw_table(cv, p, trunk)
    _draw_body(cv, p, hu, rng, trunk, masks)
    _draw_muscle(cv, p, hu, rng, trunk, masks)
    _draw_scapulae(cv, p, hu)
    _draw_arms(cv, p, hu, rng, trunk)
    lung_occ = _draw_lungs(cv, p, hu, rng, masks)
    info["lung_occ"] = lung_occ
    _draw_abdomen(cv, p, hu, rng)
    # --- mediastinum ----------------------------------------------------------------------------------
    _draw_mediastinal_fat(cv, p, hu)
    hc = apply_mass_effect(p.heart_c[None], push)[0]
    _draw_heart(cv, p, hu, hc, masks)
    info["aorta"], info["pa"] = _draw_great_vessels(cv, p, hu, rng, push)
    _draw_airways(cv, p, hu, rng, push)
    _draw_thyroid(cv, p, hu, rng)
    _draw_thymus(cv, p, hu, rng, push)
    _draw_nodes(cv, p, hu, rng, push)
    _draw_lung_vessels(cv, p, hu, rng, lung_occ, masks)
    # --- bones ------------------------------------------------------------------------------------------
    _draw_spine(cv, p, hu, masks)
    _draw_ribs(cv, p, hu)
    _draw_sternum(cv, p, hu)
    _draw_clavicles(cv, p, hu)
    info["y_front"] = p.y_front
    return info


def _mover(push):
    """Structure points displaced by the tumour's mass effect (``push``, see :func:`apply_mass_effect`)."""

    def pts(*ps):
        return apply_mass_effect(np.array(ps, float), push)

    return pts


@dataclass(frozen=True)
class _Trunk:
    """Cross-section of the trunk (semi-axes vary with z: the shoulders widen above the aortic arch)."""

    mus_a: np.ndarray
    mus_b: np.float32
    mus_cy: np.float32
    body_a: np.ndarray
    body_b: np.float32
    y_back: float


def _trunk(cv: Canvas, p: Patient) -> _Trunk:
    s = p.s
    zc = cv.coords(cv.full())[2]  # (1,1,nz)
    # shoulders: muscle and body widen above the aortic arch
    shoulder = F32(1.0) / (F32(1.0) + np.exp(-(zc - F32(p.z_arch + 10.0)) / F32(18.0)))
    m_lat = F32(p.m_lat) + F32(30.0 * s) * shoulder
    mus_a = F32(p.cav_a + p.wall) + m_lat
    mus_b = F32(p.cav_b + p.wall + 0.5 * (p.m_ant + p.m_post))
    mus_cy = F32(p.cy + 0.5 * (p.m_ant - p.m_post))
    body_a = mus_a + F32(p.fat * 1.1)
    body_b = mus_b + F32(p.fat * 0.8)
    y_back = float(mus_cy) - float(mus_b) - p.fat * 0.8
    return _Trunk(mus_a, mus_b, mus_cy, body_a, body_b, y_back)


def _draw_table(cv: Canvas, p: Patient, t: _Trunk) -> None:
    """The table under the patient."""
    tb = cv.box((p.cx - 230, t.y_back - 22, -1e4), (p.cx + 230, t.y_back - 6, 1e4))
    if tb is not None:
        tx, ty, tz = cv.coords(tb)
        dt = np.maximum(np.abs(ty - F32(t.y_back - 14)) - F32(5.0), np.abs(tx - F32(p.cx)) - F32(220.0))
        cv.paint(tb, cv.occ(dt), -350.0)


def _draw_body(cv: Canvas, p: Patient, hu, rng, t: _Trunk, masks) -> None:
    """The body (subcutaneous fat; a superellipse outline, so the fat is thickest at the flanks) with the
    breasts, then their glandular tissue."""
    s = p.s
    full = cv.full()
    X, Y, _ = cv.coords(full)
    d_body = _superellipse_sdf(X, Y, p.cx, float(t.mus_cy), t.body_a, t.body_b, p.extras.get("shape", 2.0))
    d_body = np.maximum(d_body, F32(t.y_back + 4.0) - Y)  # flattened against the table
    if p.breast > 0:
        for side in (-1, 1):
            c = (p.cx + side * 60 * s, float(t.mus_cy) + float(t.body_b.min()) - 22 * s, p.z_dome_r + 45 * s)
            r = np.array([72, 26, 55]) * s * p.breast
            lo, hi = c - r - 10, c + r + 10
            bb = cv.box(lo, hi)
            if bb is None:
                continue
            d_br = ellipsoid_sdf(*cv.coords(bb), c, r)
            sub = d_body[bb]
            np.minimum(sub, d_br, out=sub)
    fat_tex = smooth_noise(rng, cv.shape, (10, 10, 8)) * F32(6.0)
    cv.paint(full, cv.occ(d_body), F32(hu["fat"]) + fat_tex)
    if masks is not None:
        masks["fat"] = d_body < -3.0
    del d_body
    if p.breast > 0:  # glandular tissue
        for side in (-1, 1):
            c = (p.cx + side * 60 * s, float(t.mus_cy) + float(t.body_b.min()) - 12 * s, p.z_dome_r + 45 * s)
            r = np.array([35, 14, 30]) * s * p.breast
            bb = cv.box(c - r - 5, c + r + 5)
            if bb is None:
                continue
            gx, gy, gz = cv.coords(bb)
            o = cv.occ(ellipsoid_sdf(gx, gy, gz, c, r)) * np.clip(
                0.5 + smooth_noise(rng, tuple(sl.stop - sl.start for sl in bb), (6, 4, 6)), 0, 1
            )
            cv.paint(bb, o, hu["gland"])


def _draw_muscle(cv: Canvas, p: Patient, hu, rng, t: _Trunk, masks) -> None:
    """The muscle layer (pectoral, intercostal, paraspinal, shoulder girdle) with fat marbling, and the
    intermuscular fat plane between pectoral and chest wall."""
    s = p.s
    full = cv.full()
    X, Y, _ = cv.coords(full)
    d_mus = _ellipse2d_sdf(X, Y, p.cx, float(t.mus_cy), t.mus_a, t.mus_b)
    marbling = smooth_noise(rng, cv.shape, (24, 24, 12))
    mus_val = F32(hu["muscle"]) + F32(4.0) * marbling  # coarse marbling: fine texture is the scanner's noise
    cv.paint(full, cv.occ(d_mus), mus_val)
    if masks is not None:
        masks["fat"] &= d_mus > 3.0
        masks["muscle"] = d_mus < -3.0
    shell = np.abs(d_mus + F32(p.m_ant * 0.55)) - F32(1.5 * s)
    cv.paint(full, cv.occ(shell) * F32(0.7), hu["fat"])
    # the shoulder girdle above the arch: separate muscles (fat planes between them) and, beside the chest
    # wall, the axillary fat (the arms are raised)
    up = cv.box((-1e4, -1e4, p.z_arch - 60.0), (1e4, 1e4, 1e4))  # the shoulder factor is nil below
    if up is None:
        return
    X, Y, Z = cv.coords(up)
    shoulder = F32(1.0) / (F32(1.0) + np.exp(-(Z - F32(p.z_arch + 10.0)) / F32(18.0)))
    shape = shape_of(up)
    planes = smooth_noise(rng, shape, np.maximum(3, np.array(shape) * np.array(cv.spacing) / 30.0))
    d_mus = d_mus[up]
    cv.paint(up, np.clip(F32(1.0) - np.abs(planes) / F32(0.18), 0, 1) * shoulder * cv.occ(d_mus), hu["fat"])
    for side in (-1, 1):
        x_ax = F32(p.cx + side * (p.cav_a + p.wall + 14.0 * s))
        d_ax = _ellipse2d_sdf(X, Y, float(x_ax), p.cy - 0.1 * p.cav_b, 18.0 * s, 0.55 * p.cav_b)
        cv.paint(up, cv.occ(d_ax + F32(25.0 * s) * (F32(1.0) - shoulder)), hu["fat"] + F32(10.0))


def _draw_scapulae(cv: Canvas, p: Patient, hu) -> None:
    """Thin bony plates in the posterior shoulder girdle."""
    s = p.s
    for side in (-1, 1):
        c = np.array([p.cx + side * 92 * s, p.cy - p.cav_b - p.wall - 8 * s, p.z_arch - 10 * s])
        r = np.array([48 * s, 3 * s, 70 * s])
        rot = rotation(yaw=side * np.deg2rad(30))
        paint_ellipsoid(cv, c, r, hu["cortex"] * 0.55, rot=rot)


def _draw_arms(cv: Canvas, p: Patient, hu, rng, t: _Trunk) -> None:
    """Arms at the sides (when down): subcutaneous fat, muscle and the humerus (cortex around marrow),
    slightly inclined, from the shoulders down past the field of view; and the beam-hardening streak the
    two humeri cast across the body (rays through both bones are hardened: a dark band between them)."""
    if not p.extras.get("arms_down"):
        return
    s, r = p.s, p.extras["arm_r"]
    half = float(np.max(t.body_a)) - 30.0 * s  # the body's half-width at mid-chest (without the shoulders)
    for side in (-1, 1):
        x0 = p.cx + side * (half + ARM_GAP_MM + r)
        axis = np.array(
            [
                [x0 + side * 6.0 * s, float(t.mus_cy) - 0.2 * p.cav_b, p.z_top + 60.0],
                [x0, float(t.mus_cy) - 0.1 * p.cav_b, p.z_bottom - 60.0],
            ]
        )
        fat = min(0.35 * r, 0.5 * p.fat + 4.0)
        paint_tube(cv, axis, np.full(2, r), hu["fat"])
        paint_tube(cv, axis, np.full(2, r - fat), hu["muscle"])
        humerus = axis + np.array([side * 0.1 * r, 0.05 * r, 0.0])
        paint_tube(cv, humerus, np.full(2, 11.0 * s), hu["cortex"] * 0.9)
        paint_tube(cv, humerus, np.full(2, 7.5 * s), hu["fat"] + 40.0)  # yellow marrow
    y_band, width = float(t.mus_cy) - 0.15 * p.cav_b, 11.0 * s
    box = cv.box(
        (p.cx - half - ARM_GAP_MM, y_band - 3 * width, -1e4),
        (p.cx + half + ARM_GAP_MM, y_band + 3 * width, 1e4),
    )
    if box is not None:
        _, y, _ = cv.coords(box)
        streak = F32(rng.uniform(25.0, 60.0)) * np.exp(-(((y - F32(y_band)) / F32(width)) ** 2))
        sub = cv.hu[box]
        sub -= streak * (sub > F32(-900.0))  # in the body only


def _draw_lungs(cv: Canvas, p: Patient, hu, rng, masks) -> np.ndarray:
    """The rib cage interior: extrapleural/mediastinal fat first, then the lungs; returns their occupancy."""
    full = cv.full()
    X, Y, Z = cv.coords(full)
    d_cav = cavity_sdf(p, X, Y, Z)
    if masks is not None:
        masks["muscle"] &= d_cav > 25.0 * p.s
    cv.paint(full, cv.occ(d_cav), F32(hu["fat"]) + F32(10.0))
    del d_cav
    lung_occ = cv.occ(lung_sdf(p, X, Y, Z))
    # gravity: the dependent (posterior) lung of a supine patient is denser, by ~60 HU front to back
    dep = (F32(p.cy + p.cav_b) - Y) / F32(2.0 * p.cav_b)
    lung_val = (
        F32(hu["lung"]) + F32(60.0) * (dep - F32(0.5)) + F32(10.0) * smooth_noise(rng, cv.shape, (20, 20, 16))
    )
    lung_val = lung_val + F32(900.0) * _fissures(cv, p)  # the visceral pleura of the fissures: soft tissue
    cv.paint(full, lung_occ, lung_val)
    if masks is not None:
        masks["lung"] = lung_occ >= 0.999
    return lung_occ


def _fissures(cv: Canvas, p: Patient, thickness: float = 0.3) -> np.ndarray:
    """Fraction of each voxel filled by the fissures' pleura (``thickness`` mm, a faint line at the scan's
    resolution): an oblique (major) fissure in each lung, from the posterior lung at about T4 down and
    forwards to the anterior diaphragm, and running forwards from the hilum laterally (an oblique line on
    axial slices); and the horizontal (minor) fissure of the right lung, in front of the oblique one at the
    level of the fourth costal cartilage."""
    s = p.s
    X, Y, Z = cv.coords(cv.full())
    w = F32(cv.edge)
    out = []
    for side in (-1, 1):  # left (-x), right (+x)
        xs = X[X[:, 0, 0] > F32(p.cx)] if side > 0 else X[X[:, 0, 0] <= F32(p.cx)]
        lateral = np.abs(xs - F32(p.cx)) - F32(0.35 * p.cav_a)
        y = Y - F32(0.5) * lateral  # (n, ny, 1): the fissure lies further forwards laterally
        y0, z0 = p.cy - 0.9 * p.cav_b, p.z_carina + 8.0 * s
        y1, z1 = p.cy + 0.5 * p.cav_b, (p.z_dome_r if side > 0 else p.z_dome_l) + 4.0 * s
        dy, dz = y1 - y0, z1 - z0
        bow = F32(0.0008 / s) * (y - F32(0.5 * (y0 + y1))) ** 2  # concave forwards
        d_obl = ((y - F32(y0)) * F32(dz) - (Z - F32(z0)) * F32(dy)) * F32(1.0 / np.hypot(dy, dz)) + bow
        sheet = np.clip(F32(1.0) - np.abs(d_obl) / w, 0, 1)
        if side > 0:  # horizontal fissure: only in front of the oblique one (the middle lobe's roof)
            d_hor = Z - F32(p.z_carina - 34.0 * s) + F32(0.04) * (Y - F32(p.cy))
            front = d_obl * F32(np.sign(dz)) < 0
            sheet = np.maximum(sheet, np.clip(F32(1.0) - np.abs(d_hor) / w, 0, 1) * front)
        out.append(sheet * F32(thickness / cv.edge))
    return np.concatenate(out, axis=0)  # x ascending: left half first


def _draw_abdomen(cv: Canvas, p: Patient, hu, rng) -> None:
    """Below the diaphragm: fat holding bowel loops, the liver (its right lobe and the left lobe reaching
    across the midline in front of the stomach, with the hepatic veins draining into the caval vein behind
    it), the stomach (wall, mottled contents and air in front), the spleen, the splenic flexure of the colon
    (faeces and gas), the crura of the diaphragm and the upper poles of the kidneys."""
    s = p.s
    full = cv.box((-1e4, -1e4, -1e4), (1e4, 1e4, max(p.z_dome_r, p.z_dome_l)))  # the slices below the domes
    if full is None:
        return
    X, Y, Z = cv.coords(full)
    zdia = diaphragm_z(p, X, Y)
    d_abd = np.maximum(_ellipse2d_sdf(X, Y, p.cx, p.cy, p.cav_a, p.cav_b), Z - zdia + F32(3.0))
    # the peritoneal cavity: fat with bowel loops (soft tissue) and a few gas pockets
    shape = shape_of(full)
    loops = smooth_noise(rng, shape, np.maximum(3, np.array(shape) * np.array(cv.spacing) / 18.0))
    bowel = F32(hu["fat"]) + F32(hu["bowel_wall"] - hu["fat"]) * np.clip((loops - F32(0.1)) * F32(2.5), 0, 1)
    bowel = np.where(loops > F32(1.6), F32(-700.0), bowel)
    cv.paint(full, cv.occ(d_abd), bowel)
    del loops, bowel
    # the liver: right of a boundary that moves left in front and near the dome (the left lobe)
    depth = np.clip((zdia - Z) / F32(70.0 * s), 0, 1)  # 0 at the diaphragm, 1 well below it
    front = np.clip((Y - F32(p.cy - 0.2 * p.cav_b)) / F32(0.9 * p.cav_b), 0, 1)
    reach = F32(0.05 * p.cav_a) + F32(0.6 * p.cav_a) * front * (F32(1.0) - depth) ** 2
    d_liver = np.maximum(d_abd, F32(p.cx) - reach - X)
    # its lower edge: the right lobe reaches deepest at the back and side
    d_liver = np.maximum(d_liver, zdia - F32(130.0 * s) + F32(40.0 * s) * front - Z)
    texture = F32(4.0) * smooth_noise(rng, shape, (12, 12, 8))
    cv.paint(full, cv.occ(d_liver), F32(hu["liver"]) + texture)
    del d_liver, texture, depth, front, reach, zdia, d_abd
    inside = _below_diaphragm(p)
    z_r = p.z_dome_r
    ivc = [
        [p.cx + 0.16 * p.cav_a, p.cy - 0.45 * p.cav_b, z_r - 140 * s],
        [p.cx + 0.14 * p.cav_a, p.cy - 0.4 * p.cav_b, z_r - 40 * s],
        [p.cx + 0.12 * p.cav_a, p.cy - 0.3 * p.cav_b, z_r + 5 * s],
    ]
    paint_tube(cv, ivc, 11.0 * s * np.ones(3), hu["vein"], mask_fn=inside)
    top = np.array(ivc[-1]) - np.array([0.0, 0.0, 8.0 * s])
    for ang in (-0.9, 0.1, 0.9):  # right, middle and left hepatic veins, tapering into the liver
        tip = top + np.array([np.sin(ang) * 0.55 * p.cav_a, np.cos(ang) * 0.5 * p.cav_b, -30 * s])
        path = bezier([top, 0.5 * (top + tip) + np.array([0, 0, 6 * s]), tip], 6)
        paint_tube(cv, path, np.linspace(5.0, 1.8, len(path)) * s, hu["vein"], mask_fn=inside)
    # the crura: muscular bands from the diaphragm down beside the aorta
    for side in (-1, 1):
        crus = [
            [p.cx + side * 22 * s, p.y_vb + 26 * s, z_r - 5 * s],
            [p.cx + side * 14 * s, p.y_vb + 14 * s, z_r - 60 * s],
            [p.cx + side * 10 * s, p.y_vb + 6 * s, z_r - 140 * s],
        ]
        paint_tube(cv, crus, np.array([3.0, 5.0, 6.0]) * s, hu["muscle"], mask_fn=inside)
    # the kidneys' upper poles (the right one lower), in their perirenal fat
    for side, dz in ((1, -95.0), (-1, -85.0)):
        c = np.array([p.cx + side * 0.36 * p.cav_a, p.cy - 0.62 * p.cav_b, z_r + dz * s])
        rot = rotation(yaw=side * 0.35)
        paint_ellipsoid(cv, c, np.array([27, 22, 52]) * s, hu["fat"] + 15, rot=rot, grow=6.0, mask_fn=inside)
        paint_ellipsoid(cv, c, np.array([27, 22, 52]) * s, hu["kidney"], rot=rot, mask_fn=inside)
    # the stomach: wall, mottled contents (fluid and food), air in front (the patient is supine)
    st_c = np.array([p.cx - 0.5 * p.cav_a, p.cy + 0.15 * p.cav_b, p.z_dome_l - 45 * s])
    st_r = np.array([45, 40, 38]) * s * rng.uniform(0.8, 1.2)
    paint_ellipsoid(cv, st_c, st_r, hu["bowel_wall"], mask_fn=inside)
    box, occ = paint_ellipsoid(cv, st_c, st_r, hu["fluid"] + 20, grow=-4.0 * s)
    if box is not None:
        food = F32(rng.uniform(0.0, 60.0)) * np.clip(smooth_noise(rng, shape_of(box), (5, 5, 5)) + 0.5, 0, 1)
        cv.paint(box, occ, F32(hu["fluid"] + 10) + food)
    air_c = st_c + np.array([0, st_r[1] * 0.45, st_r[2] * 0.3])
    paint_ellipsoid(cv, air_c, st_r * np.array([0.8, 0.5, 0.6]) * rng.uniform(0.3, 1.0), -980.0)
    paint_ellipsoid(
        cv,
        [p.cx - 0.62 * p.cav_a, p.cy - 0.45 * p.cav_b, p.z_dome_l - 55 * s],
        np.array([28, 45, 50]) * s,
        hu["spleen"],
        rot=rotation(yaw=np.deg2rad(-30)),
        mask_fn=inside,
    )
    # the splenic flexure of the colon, in front of the spleen: wall, then faeces mottled with gas
    flex = [
        [p.cx - 0.82 * p.cav_a, p.cy - 0.1 * p.cav_b, p.z_dome_l - 95 * s],
        [p.cx - 0.75 * p.cav_a, p.cy + 0.2 * p.cav_b, p.z_dome_l - 55 * s],
        [p.cx - 0.35 * p.cav_a, p.cy + 0.6 * p.cav_b, p.z_dome_l - 85 * s],
    ]
    flex = bezier(flex, 8)
    r_col = 17.0 * s * rng.uniform(0.8, 1.2)
    paint_tube(cv, flex, r_col * np.ones(len(flex)), hu["bowel_wall"], mask_fn=inside)
    box, occ = paint_tube(cv, flex, (r_col - 3.0 * s) * np.ones(len(flex)), 0.0, mask_fn=inside)
    if box is not None:
        mottle = smooth_noise(rng, shape_of(box), np.maximum(2, np.array(shape_of(box)) // 2))
        cv.paint(box, occ, np.where(mottle > F32(0.3), F32(-850.0), F32(-150.0) + F32(60.0) * mottle))


def _below_diaphragm(p: Patient):
    """A ``mask_fn`` keeping a painter below the diaphragm (3 mm under its surface)."""

    def mask(box, x, y, z):
        return np.clip((diaphragm_z(p, x, y) - F32(3.0) - z) / F32(2.0), 0, 1)

    return mask


def _above_diaphragm(p: Patient):
    """A ``mask_fn`` keeping a painter (the heart, which rests on the diaphragm) above the top of what
    :func:`_below_diaphragm` keeps: the 3 mm of diaphragm muscle under the heart take the painter's value,
    as in unenhanced CT, where heart, diaphragm and liver are one soft-tissue density with no lung between."""

    def mask(box, x, y, z):
        return np.clip((z - diaphragm_z(p, x, y) + F32(5.0)) / F32(2.0), 0, 1)

    return mask


#: how far (mm) the heart's ellipsoid reaches below the diaphragm under its centre before it is cut there
HEART_SINK_MM = 20.0


def heart_on_diaphragm(p: Patient, hc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The drawn heart: centre and radii such that its base stays where :func:`sample_patient` put it (under
    the great vessels' roots) and its diaphragmatic surface rests on the diaphragm, as in real CT, where the
    heart sits on the central tendon with the liver below it and no lung between (the ellipsoid is made
    taller along its about-superior axis to reach :data:`HEART_SINK_MM` below the diaphragm, and is cut
    there by :func:`_above_diaphragm`)."""
    r = np.asarray(p.heart_r, float)
    part = (p.heart_rot[2, :] * r) ** 2  # each axis's share of the half-height
    half = float(np.sqrt(part.sum()))
    top = float(hc[2]) + half
    floor = float(diaphragm_z(p, F32(hc[0]), F32(hc[1]))) - HEART_SINK_MM * p.s
    new_half = max(half, 0.5 * (top - floor))
    radii = r.copy()
    radii[2] = np.sqrt(max(new_half**2 - part[0] - part[1], part[2])) / max(abs(p.heart_rot[2, 2]), 0.3)
    return np.array([hc[0], hc[1], top - new_half]), radii


def _draw_mediastinal_fat(cv: Canvas, p: Patient, hu) -> None:
    """The mediastinal fat between the lungs, narrowing towards the sternum (anterior junction line)."""
    s = p.s
    y_front, y_vbf = p.y_front, p.y_vbf
    mb = cv.box((p.cx - 60 * s, y_vbf - 10, p.z_bottom - 50), (p.cx + 60 * s, y_front + 5, p.z_top + 50))
    if mb is None:
        return
    mx, my, mz = cv.coords(mb)
    hw = F32(13.0 * s) + F32(6.0 * s) * np.clip((F32(p.z_arch) - mz) / F32(60.0 * s), 0, 1)
    hw = hw * (F32(0.45) + F32(0.55) * np.clip((F32(y_front) - my) / F32(0.45 * (y_front - y_vbf)), 0, 1))
    dm = np.maximum(
        np.abs(mx - F32(p.cx - 4 * s)) - hw, np.maximum(my - F32(y_front + 2.0), F32(y_vbf - 4.0) - my)
    )
    dm = np.maximum(dm, diaphragm_z(p, mx, my) - mz)
    cv.paint(mb, cv.occ(dm), F32(hu["fat"]) + F32(12.0))


def _draw_heart(cv: Canvas, p: Patient, hu, hc: np.ndarray, masks) -> None:
    """Pericardial / epicardial fat, the myocardium and the four chambers: the atria at the base (right
    atrium forming the right heart border, left atrium posterior), the crescent of the right ventricle in
    front, and the thick-walled left ventricle behind and to the left of it, its wall forming the septum.
    Blood pool and myocardium differ only with contrast (by phase: right heart first in the arterial phase)."""
    s = p.s
    hc, radii = heart_on_diaphragm(p, hc)
    on = _above_diaphragm(p)
    fat_pad = 3.0 * s + 0.05 * max(p.age - 30, 0) + 0.06 * p.fat
    paint_ellipsoid(cv, hc, radii, hu["fat"] + 5, rot=p.heart_rot, grow=fat_pad, mask_fn=on)
    hbox, hocc = paint_ellipsoid(cv, hc, radii, hu["myocardium"], rot=p.heart_rot, grow=1.5, mask_fn=on)
    if masks is not None:
        masks["heart"] = np.zeros(cv.shape, bool)
        masks["heart"][hbox] = hocc >= 0.999
    ax = p.heart_rot  # columns: long axis (to the apex), left-posterior, about superior
    L, W, D = radii

    def at(u, v, w):
        return hc + ax @ np.array([u * L, v * W, w * D])

    atria = (
        (at(-0.78, -0.35, 0.15), np.array([0.36 * L, 0.42 * W, 0.5 * D]), hu["heart_right"]),
        (at(-0.82, 0.32, 0.28), np.array([0.34 * L, 0.40 * W, 0.42 * D]), hu["heart_left"]),
    )
    for c, r, _ in atria:
        paint_ellipsoid(cv, c, r, hu["myocardium"], rot=ax, grow=2.5 * s, mask_fn=on)
    for c, r, blood in atria:
        paint_ellipsoid(cv, c, r, blood, rot=ax, mask_fn=on)
    lv_c, lv_r = at(0.12, 0.24, -0.05), np.array([0.58 * L, 0.34 * W, 0.48 * D])
    paint_ellipsoid(
        cv,
        at(-0.02, -0.42, 0.08),
        np.array([0.62 * L, 0.38 * W, 0.6 * D]),
        hu["heart_right"],
        rot=ax,
        mask_fn=on,
    )
    paint_ellipsoid(cv, lv_c, lv_r, hu["myocardium"], rot=ax, grow=9.0 * s, mask_fn=on)  # LV wall and septum
    paint_ellipsoid(cv, lv_c, lv_r, hu["heart_left"], rot=ax, mask_fn=on)


def _draw_great_vessels(cv: Canvas, p: Patient, hu, rng, push):
    """Aorta, pulmonary arteries, caval and brachiocephalic veins and the arch branches (fat halo first),
    with the pericardial recess fluid between; returns the aorta's and the pulmonary trunk's centre lines."""
    s = p.s
    pts = _mover(push)
    y_front, y_vbf = p.y_front, p.y_vbf
    ym = 0.5 * (y_front + y_vbf)
    asc_r = 15.0 * s * (1.0 + 0.006 * (p.age - 50))
    aorta = bezier(
        pts(
            [p.cx + 4 * s, y_front - 52 * s, p.heart_c[2] + 35 * s],
            [p.cx + 12 * s, y_front - 45 * s, p.z_arch - 30 * s],
            [p.cx + 6 * s, y_front - 52 * s, p.z_arch - 2 * s],
            [p.cx - 14 * s, ym - 5 * s, p.z_arch + 2 * s],
            [p.cx - 30 * s, y_vbf + 8 * s, p.z_arch - 12 * s],
            [p.cx - 30 * s, p.y_vb + 10 * s, p.z_arch - 40 * s],
            [p.cx - 29 * s, p.y_vb + 9 * s, p.z_dome_r - 20 * s],
            [p.cx - 20 * s, p.y_vb + 18 * s, p.z_bottom - 40],
        ),
        16,
    )
    aorta_r = np.interp(
        np.linspace(0, 1, len(aorta)), [0, 0.3, 0.5, 1], [asc_r, asc_r * 0.95, 12.5 * s, 11 * s]
    )
    pa_trunk = bezier(
        pts(
            [p.cx - 12 * s, y_front - 30 * s, p.heart_c[2] + 25 * s],
            [p.cx - 14 * s, y_front - 38 * s, p.z_arch - 40 * s],
            [p.cx - 8 * s, ym - 2 * s, p.z_arch - 38 * s],
        ),
        8,
    )
    lpa = pts(
        [p.cx - 8 * s, ym - 2 * s, p.z_arch - 38 * s],
        [p.cx - 38 * s, ym - 6 * s, p.z_arch - 30 * s],
        [p.cx - 62 * s, ym - 14 * s, p.z_arch - 45 * s],
    )
    rpa = pts(
        [p.cx - 8 * s, ym - 2 * s, p.z_arch - 38 * s],
        [p.cx + 22 * s, ym - 8 * s, p.z_arch - 44 * s],
        [p.cx + 60 * s, ym - 12 * s, p.z_arch - 52 * s],
    )
    svc = pts(
        [p.cx + 30 * s, y_front - 58 * s, p.z_arch + 30 * s],
        [p.cx + 31 * s, y_front - 60 * s, p.z_arch - 30 * s],
        [p.cx + 30 * s, y_front - 62 * s, p.heart_c[2] + 30 * s],
    )
    lbcv = bezier(
        pts(
            [p.cx - 55 * s, y_front - 35 * s, p.z_arch + 42 * s],
            [p.cx - 15 * s, y_front - 28 * s, p.z_arch + 33 * s],
            [p.cx + 30 * s, y_front - 58 * s, p.z_arch + 30 * s],
        ),
        8,
    )
    rbcv = pts(
        [p.cx + 48 * s, y_front - 45 * s, p.z_arch + 70 * s],
        [p.cx + 30 * s, y_front - 58 * s, p.z_arch + 30 * s],
    )
    bct = pts([p.cx + 0 * s, ym - 8 * s, p.z_arch + 5 * s], [p.cx + 22 * s, ym - 2 * s, p.z_arch + 70 * s])
    lcca = pts([p.cx - 12 * s, ym - 10 * s, p.z_arch + 5 * s], [p.cx - 20 * s, ym - 6 * s, p.z_arch + 80 * s])
    lsa = pts(
        [p.cx - 24 * s, ym - 18 * s, p.z_arch],
        [p.cx - 36 * s, ym - 18 * s, p.z_arch + 45 * s],
        [p.cx - 70 * s, ym - 10 * s, p.z_arch + 60 * s],
    )
    vessels = [
        (aorta, aorta_r, "aorta"),
        (pa_trunk, 13.5 * s, "pa"),
        (lpa, 10.0 * s, "pa"),
        (rpa, 10.0 * s, "pa"),
        (svc, 10.0 * s, "svc"),
        (lbcv, 6.5 * s, "vein"),
        (rbcv, 7.5 * s, "svc"),
        (bct, 6.5 * s, "aorta"),
        (lcca, 4.5 * s, "aorta"),
        (lsa, 5.5 * s, "aorta"),
    ]
    for pts_, r, _ in vessels:
        paint_tube(cv, pts_, np.broadcast_to(r, (len(pts_),)), hu["fat"] + 8, grow=3.0 * s)
    # pericardial recess fluid (superior recess, in front of the ascending aorta): a thymoma mimic
    if rng.random() < 0.5:
        c = pts([p.cx + 6 * s, y_front - 30 * s, p.heart_c[2] + 55 * s])[0]
        paint_ellipsoid(cv, c, np.array([11, 3.5, 12]) * s * rng.uniform(0.7, 1.3), hu["fluid"])
    for pts_, r, kind in vessels:
        paint_tube(cv, pts_, np.broadcast_to(r, (len(pts_),)), hu[kind])
    return aorta, pa_trunk


def _draw_airways(cv: Canvas, p: Patient, hu, rng, push) -> None:
    """Oesophagus (sometimes with air), then trachea and main bronchi (wall, then lumen)."""
    s = p.s
    pts = _mover(push)
    y_vbf = p.y_vbf
    tr_r = (9.5 if p.sex == "M" else 8.0) * s
    trachea = pts([p.cx, y_vbf + 22 * s, p.z_top + 40], [p.cx + 1 * s, y_vbf + 20 * s, p.z_carina])
    rmb = pts(
        [p.cx + 1 * s, y_vbf + 20 * s, p.z_carina],
        [p.cx + 42 * s, y_vbf + 14 * s, p.z_carina - 25 * s],
        [p.cx + 58 * s, y_vbf + 8 * s, p.z_carina - 45 * s],
    )
    lmb = pts(
        [p.cx + 1 * s, y_vbf + 20 * s, p.z_carina],
        [p.cx - 45 * s, y_vbf + 10 * s, p.z_carina - 35 * s],
        [p.cx - 60 * s, y_vbf + 4 * s, p.z_carina - 55 * s],
    )
    oes = pts(
        [p.cx - 4 * s, y_vbf + 6 * s, p.z_top + 40],
        [p.cx - 8 * s, y_vbf + 4 * s, p.z_dome_r],
        [p.cx - 25 * s, y_vbf + 25 * s, p.z_bottom - 40],
    )
    paint_tube(cv, oes, 7.5 * s * np.ones(3), hu["muscle"] + 5)
    if rng.random() < 0.4:
        paint_tube(cv, oes, 2.0 * s * np.ones(3), -900.0)
    for path, r in ((trachea, tr_r), (rmb, 7.0 * s), (lmb, 6.3 * s)):
        rr = r * np.ones(len(path))
        if path is not trachea:
            rr = np.linspace(r, r * 0.55, len(path))
        paint_tube(cv, path, rr + 1.8, hu["muscle"] - 5)
    for path, r in ((trachea, tr_r), (rmb, 7.0 * s), (lmb, 6.3 * s)):
        rr = r * np.ones(len(path))
        if path is not trachea:
            rr = np.linspace(r, r * 0.55, len(path))
        paint_tube(cv, path, rr, hu["airway"])


def _draw_thyroid(cv: Canvas, p: Patient, hu, rng) -> None:
    """The lower poles of the thyroid's lobes beside the trachea at the top of the scan (and, low in some
    patients, the isthmus in front of it), with the strap muscles in front; a goitre in a few reaches down
    behind the manubrium."""
    s = p.s
    y_tr = p.y_vbf + 22 * s  # the trachea's centre line (see ``_draw_airways``)
    low = rng.uniform(-10.0, 15.0) * s if rng.random() > 0.06 else -rng.uniform(20.0, 45.0) * s  # a goitre
    for side in (-1, 1):
        c = np.array([p.cx + side * 19 * s, y_tr + 3 * s, p.z_apex + 16 * s + low])
        r = np.array([9.0, 11.0, 24.0 - 0.5 * min(low, 0.0) / s]) * s * rng.uniform(0.8, 1.25, 3)
        paint_ellipsoid(cv, c + [side * 5 * s, 10 * s, 0], [5 * s, 3 * s, 30 * s], hu["muscle"])  # straps
        paint_ellipsoid(cv, c, r, hu["thyroid"] + rng.normal(0.0, 10.0), rot=rotation(yaw=side * 0.3))
    paint_ellipsoid(cv, [p.cx, y_tr + 12 * s, p.z_apex + 22 * s + low], [14 * s, 4 * s, 7 * s], hu["thyroid"])


def _draw_thymus(cv: Canvas, p: Patient, hu, rng, push) -> None:
    """The thymus remnant (bilobed, prevascular): a tumour mimic, soft tissue in the young; with age it
    involutes to fat holding residual soft-tissue strands and nodules (a reticular texture)."""
    s = p.s
    pts = _mover(push)
    y_front = p.y_front
    involuted = float(_sig((p.age - 32.0) / 7.0))  # as in tissue_table: the fraction replaced by fat
    for side in (-1, 1):
        c = pts([p.cx - 3 * s + side * 9 * s, y_front - 16 * s, p.z_arch + 2 * s + side * 4 * s])[0]
        r = np.array([13, 6.5, 26]) * s * rng.uniform(0.8, 1.2, 3) * (1.3 - 0.008 * min(p.age, 80))
        rot = rotation(yaw=side * 0.4, roll=0.25)
        box = cv.box(*ellipsoid_box(c, r, rot), pad=cv.edge)
        if box is None:
            continue
        shp = shape_of(box)
        strands = np.clip(smooth_noise(rng, shp, np.maximum(2, np.array(shp) // 3)) - F32(0.6), 0, 1)
        value = F32(hu["thymus"]) + F32(involuted * (hu["muscle"] - hu["thymus"])) * strands
        cv.paint(box, cv.occ(ellipsoid_sdf(*cv.coords(box), c, r, rot)), value)


def _draw_nodes(cv: Canvas, p: Patient, hu, rng, push) -> None:
    """Mediastinal and hilar lymph nodes at a random subset of stations (some calcified): tumour mimics."""
    s = p.s
    pts = _mover(push)
    y_front, y_vbf = p.y_front, p.y_vbf
    ym = 0.5 * (y_front + y_vbf)
    sites = [
        (p.cx + 17 * s, y_vbf + 28 * s, p.z_carina + 18 * s),  # right paratracheal
        (p.cx - 22 * s, y_vbf + 38 * s, p.z_arch - 22 * s),  # aortopulmonary window
        (p.cx + 0 * s, y_vbf + 14 * s, p.z_carina - 22 * s),  # subcarinal
        (p.cx - 14 * s, y_front - 24 * s, p.z_arch - 8 * s),  # prevascular
        (p.cx + 52 * s, ym - 12 * s, p.z_carina - 28 * s),  # right hilar
        (p.cx - 56 * s, ym - 18 * s, p.z_carina - 32 * s),  # left hilar
        (p.cx + 8 * s, y_front - 20 * s, p.heart_c[2] + 62 * s),  # anterior cardiophrenic / prevascular
    ]
    n_nodes = int(rng.integers(2, 7))
    for k in rng.choice(len(sites), size=min(n_nodes, len(sites)), replace=False):
        c = pts(sites[k])[0] + rng.normal(0, 3, 3)
        r = np.array([rng.uniform(3.5, 8), rng.uniform(3.5, 6.5), rng.uniform(4, 10)]) * s
        val = hu["node"] if rng.random() > 0.08 else hu["cortex"] * 0.6  # an old calcified node
        paint_ellipsoid(cv, c, r, val)


def _draw_lung_vessels(cv: Canvas, p: Patient, hu, rng, lung_occ: np.ndarray, masks=None) -> None:
    """Pulmonary arteries (from the hila) and veins (from the left atrium, below them): trees of tubes that
    branch by Murray's law and taper until about half a millimetre, filling each lung out to the pleura,
    kept to the air-filled lung (not the mediastinum painted since; ``masks["lung"]`` is narrowed to it,
    vessels included). Vessels at least a voxel thick are painted as tubes; thinner ones add the fraction
    of each voxel they fill (:func:`splat_segments`)."""
    s = p.s
    ym = 0.5 * (p.y_front + p.y_vbf)
    air = np.clip((F32(-450.0) - cv.hu) / F32(300.0), 0, 1) * lung_occ
    if masks is not None:  # the lungs without the mediastinum and airways painted over them since
        masks["lung"] &= air >= 0.999
    origin, spacing = cv.origin, cv.spacing
    hi_idx = np.array(cv.shape) - 1

    def inside(q: np.ndarray) -> np.ndarray:
        ok = lung_sdf(p, q[:, 0], q[:, 1], q[:, 2]) < -1.5
        ijk = np.rint((q - origin) / spacing).astype(np.intp)
        in_grid = ((ijk >= 0) & (ijk <= hi_idx)).all(1)
        ijk = np.clip(ijk, 0, hi_idx)
        return ok & (~in_grid | (air[ijk[:, 0], ijk[:, 1], ijk[:, 2]] > 0.5))

    roots_p, roots_v, roots_r = [], [], []
    for side in (-1, 1):
        arteries = (np.array([p.cx + side * 58 * s, ym - 12 * s, p.z_carina - 30 * s]), 8, 3.8 * s)
        veins = (np.array([p.cx + side * 42 * s, ym - 26 * s, p.z_carina - 62 * s]), 6, 3.4 * s)
        for hilum, n, r0 in (arteries, veins):
            elev = np.linspace(-1.3, 1.35, n) + rng.normal(0.0, 0.12, n)
            azim = rng.uniform(-1.2, 1.2, n)
            v = np.stack([side * np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)], 1)
            roots_p.append(np.repeat(hilum[None], n, 0))
            roots_v.append(v)
            roots_r.append(r0 * rng.uniform(0.85, 1.15, n))
    p0, p1, r = _vessel_tree(
        rng, np.concatenate(roots_p), np.concatenate(roots_v), np.concatenate(roots_r), inside, r_min=0.45
    )
    value = hu["lung_vessel"]

    def in_air(box, *_coordinates):  # the canvas passes the box's coordinates too; the mask needs none
        return air[box]

    thick = r >= max(0.9 * cv.edge, 1.5)  # fine grids (full preset): splat the many thin ones still
    for a, b, ra in zip(p0[thick], p1[thick], r[thick], strict=True):
        paint_tube(cv, np.array([a, b]), np.array([ra, 0.92 * ra]), value, mask_fn=in_air)
    medium = ~thick & (r >= 0.45 * cv.edge)
    for sel, blur in ((~thick & ~medium, 0.45), (medium, 0.7)):
        box, frac = splat_segments(cv, p0[sel], p1[sel], 0.96 * r[sel], blur=blur)
        if box is not None:
            cv.paint(box, frac * air[box], value)


def _vessel_tree(rng, pos, vec, rad, inside, r_min: float, max_generations: int = 32):
    """Grow vessel trees from root segments (start points, unit directions, radii), one generation at a
    time for all branches at once. A segment is 2-3.5 radii long plus 1 mm (a root 15 mm more, out of
    the hilum), halved or dropped where it would leave the lung (``inside`` takes (N, 3) points); each ends
    in two children whose radii keep Murray's law (r^3 = r1^3 + r2^3, asymmetric), the thinner one turning
    more, both bent a little away from their hilum. Returns the segments (start (N, 3), end (N, 3),
    radius (N,)) of every generation."""
    origin = pos.copy()
    out0, out1, outr = [], [], []
    for gen in range(max_generations):
        if not len(pos):
            break
        length = rad * rng.uniform(2.0, 3.5, len(rad)) + (15.0 if gen == 0 else 1.0)  # roots leave the hilum
        end = pos + vec * length[:, None]
        ok = inside(end)
        end[~ok] = pos[~ok] + vec[~ok] * (0.5 * length[~ok])[:, None]
        ok[~ok] = inside(end[~ok])
        pos, vec, rad, end, origin = pos[ok], vec[ok], rad[ok], end[ok], origin[ok]
        out0.append(pos)
        out1.append(end)
        outr.append(rad)
        n = len(rad)
        ratio = rng.uniform(0.45, 1.0, n)  # the thinner child's radius relative to the thicker one
        r1 = rad / (1.0 + ratio**3) ** (1.0 / 3.0)
        r2 = ratio * r1
        perp = np.cross(vec, rng.normal(0.0, 1.0, (n, 3)))
        perp /= np.linalg.norm(perp, axis=1, keepdims=True) + 1e-9
        t1 = rng.uniform(0.15, 0.45, n) * (1.2 - ratio)
        t2 = rng.uniform(0.5, 0.9, n) * (1.3 - 0.5 * ratio)
        away = end - origin
        away /= np.linalg.norm(away, axis=1, keepdims=True) + 1e-9
        kids = []
        for t, sign in ((t1, 1.0), (t2, -1.0)):
            d = np.cos(t)[:, None] * vec + sign * np.sin(t)[:, None] * perp + 0.3 * away
            kids.append(d / np.linalg.norm(d, axis=1, keepdims=True))
        pos, origin = np.concatenate([end, end]), np.concatenate([origin, origin])
        vec = np.concatenate(kids)
        rad = np.concatenate([r1, r2])
        keep = rad >= r_min
        pos, vec, rad, origin = pos[keep], vec[keep], rad[keep], origin[keep]
    if not out0:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)
    return np.concatenate(out0), np.concatenate(out1), np.concatenate(outr)


def _draw_clavicles(cv: Canvas, p: Patient, hu) -> None:
    """The clavicles, from the sternal notch out and back to the shoulders."""
    s = p.s
    y_front = p.y_front
    notch = p.z_arch + 42 * s
    for side in (-1, 1):
        clav = bezier(
            np.array(
                [
                    [p.cx + side * 18 * s, y_front + 14 * s, notch],
                    [p.cx + side * 70 * s, y_front + 12 * s, notch + 14 * s],
                    [p.cx + side * 135 * s, y_front - 35 * s, notch + 26 * s],
                ]
            ),
            6,
        )
        paint_tube(cv, clav, 7.5 * s * np.ones(len(clav)), hu["cortex"] * 0.75)


def _branches(cv: Canvas, rng, start, side, s, value, mask_fn):
    """A three-generation vessel tree from the hilum, directions fanning into the lung."""
    dirs0 = [
        (0.2, 0.1, 1.0),
        (0.3, 0.0, -1.0),
        (1.0, 0.0, 0.1),
        (0.7, 0.7, -0.3),
        (0.6, -0.8, -0.4),
        (0.8, 0.3, 0.6),
        (0.5, -0.5, 0.7),
        (0.6, 0.2, -0.8),
        (0.4, 0.8, 0.5),
        (0.3, -0.7, -0.9),
    ]
    queue = []
    for d in dirs0:
        v = np.array([side * d[0], d[1], d[2]], float) + rng.normal(0, 0.15, 3)
        queue.append((start, v / np.linalg.norm(v), 5.2 * s, 0))
    lengths = (45.0, 34.0, 27.0, 21.0, 17.0)
    while queue:
        p0, v, r, gen = queue.pop()
        L = lengths[gen] * s * rng.uniform(0.8, 1.25)
        p1 = p0 + v * L
        r1 = r * 0.76
        paint_tube(cv, np.array([p0, p1]), np.array([r, r1]), value, mask_fn=mask_fn)
        if gen < 4:
            for _ in range(2):
                w = v + rng.normal(0, 0.45, 3)
                queue.append((p1, w / np.linalg.norm(w), r1, gen + 1))


def _bone_value(hu, d_inner_frac):
    """Cortex near the surface, cancellous inside: mix by depth."""
    return hu["cancellous"] + (hu["cortex"] - hu["cancellous"]) * d_inner_frac


def _draw_spine(cv: Canvas, p: Patient, hu, masks=None):
    """The thoracic spine with a gentle kyphosis (the column bows ~10 mm backwards at mid-thorax): vertebral
    bodies (a cortical shell and end plates around cancellous bone, larger caudally) with the discs between
    them; the posterior arch (pedicles, laminae, transverse processes) and the spinous processes sloping
    down behind it, around the canal with CSF."""
    s = p.s
    lo = (p.cx - 60 * s, p.y_vb - 85 * s, -1e4)
    hi = (p.cx + 60 * s, p.y_vb + 25 * s, 1e4)
    box = cv.box(lo, hi)
    if box is None:
        return
    x, y, z = cv.coords(box)
    zm, half = 0.5 * (p.z_apex + p.z_dome_r), 0.5 * (p.z_apex - p.z_dome_r) + 40.0 * s
    t = np.clip((z - F32(zm)) / F32(half), -1, 1)  # (1,1,nz): -1 caudal ... 1 cranial
    y = y + F32(10.0 * s) * (F32(1.0) - t * t)  # kyphosis: shift the column back, i.e. the frame forwards
    grow = F32(1.0) - F32(0.12) * t  # lower thoracic vertebrae are larger
    pitch = 25.0 * s
    phase = np.mod((z - F32(p.z_dome_r)) / F32(pitch), F32(1.0))  # (1,1,nz)
    from_disc = np.abs(phase - F32(0.5)) * F32(pitch)  # mm from the middle of the disc
    disc = np.clip(F32(1.0) - (from_disc - F32(3.0 * s)) / F32(1.5), 0, 1)  # ~7 mm discs
    endplate = np.clip(F32(1.0) - (from_disc - F32(3.0 * s) - F32(1.5)) / F32(2.0), 0, 1)
    # vertebral bodies: cortical rim and end plates + cancellous core, discs between them
    d = _ellipse2d_sdf(x, y, p.cx, p.y_vb, 19.0 * s * grow, 16.0 * s * grow)
    rim = np.maximum(np.clip(F32(1.0) + d / F32(2.5), 0, 1), endplate)
    val = _bone_value(hu, rim) * (F32(1.0) - disc) + F32(95.0) * disc
    cv.paint(box, cv.occ(d), val)
    if masks is not None:
        masks["bone"] = np.zeros(cv.shape, bool)
        masks["bone"][box] = (d < -1.0) & (disc < 0.01)
    # posterior arch (pedicles, laminae), transverse and spinous processes; the canal with CSF
    canal_y = p.y_vb - 27.0 * s
    arch = _ellipse2d_sdf(x, y, p.cx, canal_y - 2 * s, 17.0 * s, 14.0 * s)
    tp = _ellipse2d_sdf(np.abs(x - F32(p.cx)), y, 27.0 * s, canal_y - 4 * s, 16.0 * s, 6.0 * s)
    post = np.minimum(arch, tp)
    gap = np.clip(F32(1.0) - np.abs(phase - F32(0.5)) * F32(pitch) / F32(10.0 * s), 0, 1)  # between arches
    bone_post = _bone_value(hu, F32(0.15))  # thin cortex over cancellous bone, at partial volume
    cv.paint(box, cv.occ(post) * (F32(1.0) - F32(0.85) * gap), bone_post)
    # spinous processes slope caudally: the further back, the lower
    sp = _ellipse2d_sdf(x, y, p.cx, canal_y - 26.0 * s, 4.5 * s, 14.0 * s)
    sp_phase = np.mod((z - F32(p.z_dome_r) + F32(0.7) * (y - F32(canal_y))) / F32(pitch), F32(1.0))
    sp_gap = np.clip(F32(1.0) - np.abs(sp_phase - F32(0.5)) * F32(pitch) / F32(9.0 * s), 0, 1)
    cv.paint(box, cv.occ(sp) * (F32(1.0) - sp_gap), bone_post)
    canal = _ellipse2d_sdf(x, y, p.cx, canal_y, 8.5 * s, 8.0 * s)
    cv.paint(box, cv.occ(canal), hu["csf"])


def _draw_ribs(cv: Canvas, p: Patient, hu):
    """Ribs 1-12 as flattened oblique tubes round the inner rib-cage surface (cortex and marrow), from
    the vertebrae round to their costal cartilages, which reach the sternum for the true ribs."""
    s = p.s
    box = cv.box(
        (p.cx - p.cav_a - 40 * s, p.cy - p.cav_b - 40 * s, p.z_bottom - 50),
        (p.cx + p.cav_a + 40 * s, p.cy + p.cav_b + 40 * s, p.z_apex + 10),
    )
    if box is None:
        return
    x, y, z = cv.coords(box)
    ca, cb = cavity_ab(p, z)
    xn = (x - F32(p.cx)) / ca
    yn = (y - F32(p.cy)) / cb
    rho = np.sqrt(xn * xn + yn * yn) + F32(1e-6)
    reff = np.sqrt((x - F32(p.cx)) ** 2 + (y - F32(p.cy)) ** 2) / rho  # local radius of the ellipse
    r_mm = (rho - F32(1.0)) * reff  # outward distance from the inner rib-cage surface
    psi = np.arccos(np.clip(-yn / rho, -1, 1))  # 0 posterior midline ... pi anterior midline
    pitch = 27.0 * s
    drop = 85.0 * s
    # each rib falls steeply from its head beside the spine round the posterolateral wall, runs level at
    # the front, and its costal cartilage rises a little to the sternum
    fall = np.clip((psi - F32(0.1 * np.pi)) / F32(0.6 * np.pi), 0, 1)
    fall = fall * fall * (F32(3.0) - F32(2.0) * fall)  # smoothstep
    rise = F32(0.18) * np.clip((psi - F32(0.76 * np.pi)) / F32(0.17 * np.pi), 0, 1)
    u = (z + F32(drop) * (fall - rise) - F32(p.z_apex - 8.0 * s)) / F32(pitch)
    k = np.round(u)
    dz = (u - k) * F32(pitch)
    t, h = 6.5 * s, 12.0 * s  # flattened: thin radially, tall along the chest wall
    q = np.sqrt(((r_mm - F32(t * 0.5 + 0.5)) / F32(t * 0.5)) ** 2 + (dz / F32(h * 0.5)) ** 2)
    d = (q - F32(1.0)) * F32(min(t, h) * 0.5)
    # ribs 1..12 below the apex; bony part up to ~0.78 pi, costal cartilage to the sternum (true ribs)
    valid = (k <= 0) & (k >= -11)
    ant_end = np.where(k >= -6, F32(0.93 * np.pi), F32(0.85 * np.pi))
    bony = psi < F32(0.76 * np.pi)
    cart = (psi >= F32(0.76 * np.pi)) & (psi < ant_end)
    o = cv.occ(d) * (valid & (bony | cart)) * (psi > F32(0.16))
    val = np.where(bony, _bone_value(hu, np.clip(q * 3.0 - 2.0, 0, 0.6)), F32(hu["cartilage"]))  # thin cortex
    cv.paint(box, o, val)


def _draw_sternum(cv: Canvas, p: Patient, hu):
    """The sternum: the wide manubrium, the joint below it, and the narrower, thinner body."""
    s = p.s
    notch = p.z_arch + 42 * s
    z_low = p.z_dome_r - 15 * s
    yc = p.y_front + 7.0 * s
    box = cv.box((p.cx - 35 * s, yc - 15 * s, z_low - 10), (p.cx + 35 * s, yc + 15 * s, notch + 5))
    if box is None:
        return
    x, y, z = cv.coords(box)
    manub = np.clip((z - F32(notch - 45 * s)) / F32(10.0), 0, 1)  # 1 in the manubrium
    a = F32(13.0 * s) + F32(12.0 * s) * manub
    b = F32(4.5 * s) + F32(2.5 * s) * manub
    d = _ellipse2d_sdf(x, y, p.cx, yc, a, b)
    d = np.maximum(d, np.maximum(z - F32(notch), F32(z_low) - z))
    rim = np.clip(F32(1.0) + d / F32(1.5), 0, 1)
    val = _bone_value(hu, rim * F32(0.6))
    joint = np.abs(z - F32(notch - 45.0 * s)) < F32(2.0)  # the manubriosternal joint (fibrocartilage)
    cv.paint(box, cv.occ(d), np.where(joint, F32(hu["cartilage"]), val))
