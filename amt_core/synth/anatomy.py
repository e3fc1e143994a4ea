"""Per-patient thoracic anatomy drawn on a :class:`~amt_core.synth.canvas.Canvas`.

World frame: RAS millimetres (x towards the patient's right, y anterior, z superior); z = 0 is the top
of the right hemidiaphragm. Every structure is placed from a handful of landmarks (body centre, inner
rib-cage ellipse, diaphragm domes, carina and aortic-arch heights) that scale with the patient's size
and vary with sex and age. Drawing order encodes anatomy: later structures replace earlier ones;
:func:`draw_anatomy` calls one painter per structure (``_draw_table`` ... ``_draw_clavicles``) in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amt_core.synth.canvas import (
    F32,
    Canvas,
    bezier,
    ellipsoid_sdf,
    paint_ellipsoid,
    paint_tube,
    rotation,
    smooth_noise,
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
}
PHASE_INDEX = {"none": 0, "venous": 1, "arterial": 2}


def tissue_table(contrast: str, enhancement: float, age: float, rng: np.random.Generator) -> dict[str, float]:
    """HU of every tissue for one scan (contrast phase, bolus strength, age, small patient variation)."""
    k = PHASE_INDEX[contrast]
    out = {}
    for name, vals in TISSUE_HU.items():
        base = vals[0]
        out[name] = base + (vals[k] - base) * enhancement
    out["fat"] += rng.normal(0.0, 6.0)
    out["muscle"] += rng.normal(0.0, 4.0)
    out["liver"] += rng.normal(0.0, 6.0)
    out["lung"] = float(rng.uniform(-910.0, -860.0))
    out["cancellous"] = float(np.clip(265.0 - 2.0 * (age - 30.0) + rng.normal(0, 20), 110.0, 320.0))
    out["cortex"] = float(rng.uniform(650.0, 850.0))
    out["cartilage"] = float(np.clip(90.0 + 3.0 * (age - 30.0) + rng.normal(0, 25), 60.0, 350.0))
    out["airway"] = -990.0
    # thymus: soft tissue in the young, replaced by fat with age
    f = float(_sig((age - 32.0) / 7.0))
    out["thymus"] = (1.0 - f) * out["thymus"] + f * (out["fat"] + 25.0)
    return out


# --- the patient ---------------------------------------------------------------------------------------------
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
    def z_bottom(self) -> float:
        return self.z_dome_r - 35.0 * self.s

    def body_width(self) -> float:
        """Lateral extent of the body at mid-chest (without the shoulders), mm."""
        return 2.0 * (self.cav_a + self.wall + self.m_lat + 1.1 * self.fat)

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
    """Height (mm) of the diaphragm surface under (x, y): two paraboloid domes."""
    s = p.s
    yd = F32(p.cy + 0.2 * p.cav_b)
    zr = F32(p.z_dome_r) - (
        (x - F32(p.cx + 0.42 * p.cav_a)) ** 2 / F32(2 * 48.0 * s) + (y - yd) ** 2 / F32(2 * 62.0 * s)
    )
    zl = F32(p.z_dome_l) - (
        (x - F32(p.cx - 0.42 * p.cav_a)) ** 2 / F32(2 * 48.0 * s) + (y - yd) ** 2 / F32(2 * 62.0 * s)
    )
    return np.maximum(zr, zl)


def cavity_ab(p: Patient, z):
    """Semi-axes of the inner rib cage at height z: narrower towards the apex."""
    t = np.clip((z - F32(p.z_carina - 30.0 * p.s)) / F32(p.z_apex - p.z_carina + 30.0 * p.s), 0, 1) ** 1.5
    return F32(p.cav_a) * (F32(1.0) - F32(0.25) * t), F32(p.cav_b) * (F32(1.0) - F32(0.12) * t)


def cavity_sdf(p: Patient, x, y, z):
    """Inside of the rib cage (kidney-shaped: the spine indents it posteriorly), capped at the apex."""
    a, b = cavity_ab(p, z)
    d = _ellipse2d_sdf(x, y, p.cx, p.cy, a, b)
    # the vertebral column (and the paravertebral muscles beside it) indent the cavity
    spine = _ellipse2d_sdf(x, y, p.cx, p.y_vb - 8.0 * p.s, 21.0 * p.s, 27.0 * p.s)
    d = np.maximum(d, -spine)
    return np.maximum(d, z - F32(p.z_apex + 5.0))


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
    lung_occ = _draw_lungs(cv, p, hu, rng, masks)
    info["lung_occ"] = lung_occ
    _draw_abdomen(cv, p, hu, rng)
    # --- mediastinum ----------------------------------------------------------------------------------
    _draw_mediastinal_fat(cv, p, hu)
    hc = apply_mass_effect(p.heart_c[None], push)[0]
    _draw_heart(cv, p, hu, hc, masks)
    info["aorta"], info["pa"] = _draw_great_vessels(cv, p, hu, rng, push)
    _draw_airways(cv, p, hu, rng, push)
    _draw_thymus(cv, p, hu, rng, push)
    _draw_nodes(cv, p, hu, rng, push)
    _draw_lung_vessels(cv, p, hu, rng, lung_occ)
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
    """The body (subcutaneous fat) with the breasts, then their glandular tissue."""
    s = p.s
    full = cv.full()
    X, Y, _ = cv.coords(full)
    d_body = _ellipse2d_sdf(X, Y, p.cx, float(t.mus_cy), t.body_a, t.body_b)
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
    mus_val = F32(hu["muscle"]) + F32(8.0) * marbling
    cv.paint(full, cv.occ(d_mus), mus_val)
    if masks is not None:
        masks["fat"] &= d_mus > 3.0
        masks["muscle"] = d_mus < -3.0
    shell = np.abs(d_mus + F32(p.m_ant * 0.55)) - F32(1.5 * s)
    cv.paint(full, cv.occ(shell) * F32(0.7), hu["fat"])


def _draw_scapulae(cv: Canvas, p: Patient, hu) -> None:
    """Thin bony plates in the posterior shoulder girdle."""
    s = p.s
    for side in (-1, 1):
        c = np.array([p.cx + side * 92 * s, p.cy - p.cav_b - p.wall - 8 * s, p.z_arch - 10 * s])
        r = np.array([48 * s, 3 * s, 70 * s])
        rot = rotation(yaw=side * np.deg2rad(30))
        paint_ellipsoid(cv, c, r, hu["cortex"] * 0.55, rot=rot)


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
    dep = np.clip((F32(p.cy) - Y) / F32(p.cav_b), 0, 1)  # dependent (posterior) lung is denser
    lung_val = F32(hu["lung"]) + F32(35.0) * dep + F32(12.0) * smooth_noise(rng, cv.shape, (16, 16, 12))
    cv.paint(full, lung_occ, lung_val)
    if masks is not None:
        masks["lung"] = lung_occ >= 0.999
    return lung_occ


def _draw_abdomen(cv: Canvas, p: Patient, hu, rng) -> None:
    """Below the diaphragm: liver, stomach (fluid and air) and spleen."""
    s = p.s
    full = cv.full()
    X, Y, Z = cv.coords(full)
    zdia = diaphragm_z(p, X, Y)
    d_abd = np.maximum(_ellipse2d_sdf(X, Y, p.cx, p.cy, p.cav_a, p.cav_b), Z - zdia + F32(3.0))
    cv.paint(full, cv.occ(d_abd), F32(hu["liver"]) + F32(5.0) * smooth_noise(rng, cv.shape, (12, 12, 8)))
    del d_abd, zdia
    st_c = np.array([p.cx - 0.5 * p.cav_a, p.cy + 0.15 * p.cav_b, p.z_dome_l - 45 * s])
    st_r = np.array([45, 40, 38]) * s * rng.uniform(0.8, 1.2)
    paint_ellipsoid(cv, st_c, st_r, hu["fluid"] + 20)
    air_c = st_c + np.array([0, st_r[1] * 0.45, st_r[2] * 0.3])
    paint_ellipsoid(cv, air_c, st_r * np.array([0.8, 0.5, 0.6]), -980.0)
    paint_ellipsoid(
        cv,
        [p.cx - 0.62 * p.cav_a, p.cy - 0.45 * p.cav_b, p.z_dome_l - 55 * s],
        np.array([28, 45, 50]) * s,
        hu["spleen"],
        rot=rotation(yaw=np.deg2rad(-30)),
    )


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
    """Pericardial / epicardial fat, the myocardium, and the two blood pools split by the septum."""
    s = p.s
    fat_pad = 3.0 * s + 0.05 * max(p.age - 30, 0) + 0.06 * p.fat
    paint_ellipsoid(cv, hc, p.heart_r, hu["fat"] + 5, rot=p.heart_rot, grow=fat_pad)
    hbox, hocc = paint_ellipsoid(cv, hc, p.heart_r, hu["myocardium"], rot=p.heart_rot, grow=1.5)
    if masks is not None:
        masks["heart"] = np.zeros(cv.shape, bool)
        masks["heart"][hbox] = hocc >= 0.999
    inner = p.heart_r - np.array([11, 9, 9]) * s
    ax = p.heart_rot
    right_c = hc + ax @ np.array([0.05 * p.heart_r[0], 0.28 * p.heart_r[1], 0.0])
    left_c = hc + ax @ np.array([-0.05 * p.heart_r[0], -0.30 * p.heart_r[1], 0.0])
    paint_ellipsoid(cv, right_c, inner * np.array([0.9, 0.55, 0.9]), hu["heart_right"], rot=ax)
    paint_ellipsoid(cv, left_c, inner * np.array([0.9, 0.55, 0.9]), hu["heart_left"], rot=ax)


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


def _draw_thymus(cv: Canvas, p: Patient, hu, rng, push) -> None:
    """The thymus remnant (bilobed, prevascular): a tumour mimic, soft tissue in the young."""
    s = p.s
    pts = _mover(push)
    y_front = p.y_front
    for side in (-1, 1):
        c = pts([p.cx - 3 * s + side * 9 * s, y_front - 16 * s, p.z_arch + 2 * s + side * 4 * s])[0]
        r = np.array([13, 6.5, 26]) * s * rng.uniform(0.8, 1.2, 3) * (1.3 - 0.008 * min(p.age, 80))
        paint_ellipsoid(cv, c, r, hu["thymus"], rot=rotation(yaw=side * 0.4, roll=0.25))


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


def _draw_lung_vessels(cv: Canvas, p: Patient, hu, rng, lung_occ: np.ndarray) -> None:
    """Lung vessels and small airways: branching tubes from each hilum, kept inside the lungs."""
    s = p.s
    ym = 0.5 * (p.y_front + p.y_vbf)
    lung_mask = lung_occ

    def inside_lung(box, *_coordinates):  # the canvas passes the box's coordinates too; the mask needs none
        return lung_mask[box]

    for side in (-1, 1):
        hilum = np.array([p.cx + side * 50 * s, ym - 14 * s, p.z_carina - 28 * s])
        _branches(cv, rng, hilum, side, s, hu["lung_vessel"], inside_lung)


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
    s = p.s
    lo = (p.cx - 60 * s, p.y_vb - 75 * s, -1e4)
    hi = (p.cx + 60 * s, p.y_vb + 25 * s, 1e4)
    box = cv.box(lo, hi)
    if box is None:
        return
    x, y, z = cv.coords(box)
    pitch = 25.0 * s
    phase = np.mod((z - F32(p.z_dome_r)) / F32(pitch), F32(1.0))  # (1,1,nz)
    disc = np.clip(F32(1.0) - np.abs(phase - F32(0.5)) * F32(pitch) / F32(4.0 * s), 0, 1)  # ~8 mm discs
    # vertebral bodies: cortex rim + cancellous core, discs between them
    d = _ellipse2d_sdf(x, y, p.cx, p.y_vb, 19.0 * s, 16.0 * s)
    rim = np.clip(F32(1.0) + d / F32(3.0), 0, 1)
    val = _bone_value(hu, rim) * (F32(1.0) - disc) + F32(95.0) * disc
    cv.paint(box, cv.occ(d), val)
    if masks is not None:
        masks["bone"] = np.zeros(cv.shape, bool)
        masks["bone"][box] = d < -1.0
    # posterior arch (pedicles, laminae), transverse and spinous processes; the canal with CSF
    canal_y = p.y_vb - 27.0 * s
    arch = _ellipse2d_sdf(x, y, p.cx, canal_y - 2 * s, 17.0 * s, 14.0 * s)
    tp = _ellipse2d_sdf(np.abs(x - F32(p.cx)), y, 27.0 * s, canal_y - 4 * s, 16.0 * s, 6.0 * s)
    sp = _ellipse2d_sdf(x, y, p.cx, canal_y - 26.0 * s, 4.5 * s, 14.0 * s)
    post = np.minimum(np.minimum(arch, tp), sp)
    gap = np.clip(F32(1.0) - np.abs(phase - F32(0.5)) * F32(pitch) / F32(10.0 * s), 0, 1)  # between arches
    cv.paint(box, cv.occ(post) * (F32(1.0) - F32(0.85) * gap), hu["cortex"] * 0.6)
    canal = _ellipse2d_sdf(x, y, p.cx, canal_y, 8.5 * s, 8.0 * s)
    cv.paint(box, cv.occ(canal), hu["csf"])


def _draw_ribs(cv: Canvas, p: Patient, hu):
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
    drop = 85.0 * s  # ribs slope down towards the front
    u = (z + F32(drop) * (F32(1.0) - np.cos(psi)) * F32(0.5) - F32(p.z_apex - 8.0 * s)) / F32(pitch)
    k = np.round(u)
    dz = (u - k) * F32(pitch)
    t, h = 9.0 * s, 11.0 * s
    q = np.sqrt(((r_mm - F32(t * 0.5 + 0.5)) / F32(t * 0.5)) ** 2 + (dz / F32(h * 0.5)) ** 2)
    d = (q - F32(1.0)) * F32(min(t, h) * 0.5)
    # ribs 1..12 below the apex; bony part up to ~0.78 pi, costal cartilage to the sternum (true ribs)
    valid = (k <= 0) & (k >= -11)
    ant_end = np.where(k >= -6, F32(0.93 * np.pi), F32(0.85 * np.pi))
    bony = psi < F32(0.76 * np.pi)
    cart = (psi >= F32(0.76 * np.pi)) & (psi < ant_end)
    o = cv.occ(d) * (valid & (bony | cart)) * (psi > F32(0.16))
    val = np.where(bony, _bone_value(hu, np.clip(q * 1.6 - 0.6, 0, 1)), F32(hu["cartilage"]))
    cv.paint(box, o, val)


def _draw_sternum(cv: Canvas, p: Patient, hu):
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
    b = F32(5.5 * s) + F32(2.5 * s) * manub
    d = _ellipse2d_sdf(x, y, p.cx, yc, a, b)
    d = np.maximum(d, np.maximum(z - F32(notch), F32(z_low) - z))
    rim = np.clip(F32(1.0) + d / F32(1.2), 0, 1)
    cv.paint(box, cv.occ(d), _bone_value(hu, rim * F32(0.6)))
