"""A voxel canvas in RAS world millimetres and the shape primitives the synthetic anatomy is drawn with.

Shapes are signed distance functions (negative inside, in mm) evaluated only inside each shape's
bounding box, on broadcast coordinate vectors (no meshgrids of the whole volume, no per-voxel Python).
A shape's occupancy of a voxel is ``clip(0.5 - d / w, 0, 1)`` with ``w`` the voxel size: an analytic
partial-volume estimate (the fraction of the voxel footprint the shape covers), so that edges are
resolution-consistent at every preset. Painting alpha-blends a value into the canvas by that occupancy.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


class Canvas:
    """A volume of HU values on an axis-aligned RAS grid (axes x=right, y=anterior, z=superior)."""

    def __init__(self, shape: tuple[int, int, int], spacing, origin, fill: float = -1000.0):
        self.shape = tuple(int(s) for s in shape)
        self.spacing = np.asarray(spacing, dtype=float)
        self.origin = np.asarray(origin, dtype=float)
        self.axes = [
            (self.origin[k] + np.arange(self.shape[k]) * self.spacing[k]).astype(F32) for k in range(3)
        ]
        self.hu = np.full(self.shape, fill, dtype=F32)
        # soft-edge width: the voxel's footprint (geometric mean edge) in mm
        self.edge = float(np.cbrt(np.prod(self.spacing)))

    @property
    def affine(self) -> np.ndarray:
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff

    def box(self, lo, hi, pad: float = 0.0):
        """Index slices of the voxels whose centres lie in the world box [lo - pad, hi + pad], or None."""
        out = []
        for k in range(3):
            a = (float(lo[k]) - pad - self.origin[k]) / self.spacing[k]
            b = (float(hi[k]) + pad - self.origin[k]) / self.spacing[k]
            i0 = max(0, int(np.floor(a)))
            i1 = min(self.shape[k], int(np.ceil(b)) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def full(self):
        return tuple(slice(0, n) for n in self.shape)

    def coords(self, box):
        """Broadcastable world coordinate vectors (X[:,None,None], Y[None,:,None], Z[None,None,:])."""
        x = self.axes[0][box[0]][:, None, None]
        y = self.axes[1][box[1]][None, :, None]
        z = self.axes[2][box[2]][None, None, :]
        return x, y, z

    def occ(self, d: np.ndarray) -> np.ndarray:
        return np.clip(F32(0.5) - d * F32(1.0 / self.edge), F32(0.0), F32(1.0))

    def paint(self, box, occ: np.ndarray, value) -> None:
        """Alpha-blend ``value`` (scalar or array broadcastable to the box) with occupancy ``occ``."""
        if box is None:
            return
        sub = self.hu[box]
        sub += occ * (value - sub)


def shape_of(box) -> tuple[int, int, int]:
    return tuple(s.stop - s.start for s in box)


def sub_box(outer, inner):
    """``inner`` (absolute slices) expressed relative to ``outer``."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for o, i in zip(outer, inner, strict=True))


def ellipsoid_sdf(x, y, z, center, radii, rot: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid; ``rot`` columns are its axes in world frame."""
    dx, dy, dz = x - F32(center[0]), y - F32(center[1]), z - F32(center[2])
    if rot is None:
        u, v, w = dx, dy, dz
    else:
        r = rot.astype(F32)
        u = dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]
        v = dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]
        w = dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]
    a, b, c = (F32(r_) for r_ in radii)
    q = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2) + F32(1e-6)
    dist = np.sqrt(u * u + v * v + w * w)
    return dist * (F32(1.0) - F32(1.0) / q)


def ellipsoid_box(center, radii, rot=None):
    """World bounding box (lo, hi) of an ellipsoid."""
    radii = np.asarray(radii, float)
    if rot is None:
        ext = radii
    else:
        ext = np.sqrt((np.asarray(rot) ** 2) @ (radii**2))
    c = np.asarray(center, float)
    return c - ext, c + ext


def rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix (radians): about z (yaw), then y (pitch), then x (roll)."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cy, sy = np.cos(pitch), np.sin(pitch)
    cx, sx = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ ry @ rx


def paint_ellipsoid(cv: Canvas, center, radii, value, rot=None, grow: float = 0.0, mask_fn=None):
    """Paint an ellipsoid (radii grown by ``grow`` mm); returns (box, occupancy) or (None, None)."""
    radii = np.asarray(radii, float) + grow
    lo, hi = ellipsoid_box(center, radii, rot)
    box = cv.box(lo, hi, pad=cv.edge)
    if box is None:
        return None, None
    x, y, z = cv.coords(box)
    o = cv.occ(ellipsoid_sdf(x, y, z, center, radii, rot))
    if mask_fn is not None:
        o *= mask_fn(box, x, y, z)
    cv.paint(box, o, value)
    return box, o


def tube_sdf_box(cv: Canvas, points, radii, pad: float = 0.0):
    """Signed distance to a polyline tube with per-point radii, on the tube's bounding box.

    Returns (box, d) or (None, None). Each segment is evaluated only inside its own box.
    """
    pts = np.asarray(points, float)
    rad = np.broadcast_to(np.asarray(radii, float), (len(pts),)).astype(float)
    margin = rad.max() + pad + cv.edge
    box = cv.box(pts.min(0), pts.max(0), pad=margin)
    if box is None:
        return None, None
    d = np.full(shape_of(box), np.inf, dtype=F32)
    for k in range(len(pts) - 1):
        p0, p1 = pts[k], pts[k + 1]
        r0, r1 = rad[k], rad[k + 1]
        m = max(r0, r1) + pad + cv.edge
        sb = cv.box(np.minimum(p0, p1), np.maximum(p0, p1), pad=m)
        if sb is None:
            continue
        # clip the segment box to the tube box
        sb = tuple(slice(max(s.start, b.start), min(s.stop, b.stop)) for s, b in zip(sb, box, strict=True))
        if any(s.stop <= s.start for s in sb):
            continue
        x, y, z = cv.coords(sb)
        v = (p1 - p0).astype(F32)
        vv = F32(max(float(v @ v), 1e-9))
        dx, dy, dz = x - F32(p0[0]), y - F32(p0[1]), z - F32(p0[2])
        t = np.clip((dx * v[0] + dy * v[1] + dz * v[2]) / vv, 0.0, 1.0)
        ex, ey, ez = dx - t * v[0], dy - t * v[1], dz - t * v[2]
        dist = np.sqrt(ex * ex + ey * ey + ez * ez) - (F32(r0) + t * F32(r1 - r0))
        rel = sub_box(box, sb)
        np.minimum(d[rel], dist, out=d[rel])
    return box, d


def paint_tube(cv: Canvas, points, radii, value, grow: float = 0.0, mask_fn=None):
    """Paint a tube along a polyline; returns (box, occupancy)."""
    rad = np.asarray(radii, float) + grow
    box, d = tube_sdf_box(cv, points, rad)
    if box is None:
        return None, None
    o = cv.occ(d)
    if mask_fn is not None:
        o *= mask_fn(box, *cv.coords(box))
    cv.paint(box, o, value)
    return box, o


def _upsample_axis(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Linear interpolation of ``a`` along ``axis`` onto ``n`` samples spanning the same extent."""
    m = a.shape[axis]
    pos = (np.arange(n, dtype=np.float64) + 0.5) * (m / n) - 0.5
    pos = np.clip(pos, 0.0, m - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.intp), m - 2)
    w = (pos - i0).astype(F32)
    shape = [1] * a.ndim
    shape[axis] = n
    w = w.reshape(shape)
    lo = np.take(a, i0, axis=axis)
    hi = np.take(a, i0 + 1, axis=axis)
    return lo + w * (hi - lo)


def smooth_noise(rng: np.random.Generator, shape, cells) -> np.ndarray:
    """Smooth random field of ``shape`` (zero mean, about unit sd): ``cells`` random values per axis,
    linearly interpolated (separable, so the cost is a few passes over the output)."""
    cells = tuple(max(2, int(c)) for c in np.broadcast_to(cells, (3,)))
    small = rng.standard_normal(cells).astype(F32)
    # x1.8 restores about unit sd after interpolation (linear interpolation of white noise keeps ~(2/3)^1.5)
    small = (small - small.mean()) * F32(1.8 / max(float(small.std()), 1e-6))
    out = small
    for axis in (2, 1, 0):  # smallest intermediate arrays first
        out = _upsample_axis(out, axis, int(shape[axis]))
    return out


def bezier(points, n: int = 12) -> np.ndarray:
    """A smooth curve through control points (quadratic-spline-like Chaikin smoothing), ``n``+ points."""
    pts = np.asarray(points, float)
    for _ in range(3):
        if len(pts) >= n:
            break
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        mid = np.empty((2 * len(q), 3))
        mid[0::2], mid[1::2] = q, r
        pts = np.vstack([pts[:1], mid, pts[-1:]])
    return pts


def splat_segments(cv: Canvas, p0: np.ndarray, p1: np.ndarray, radii: np.ndarray, blur: float = 0.6):
    """Volume fraction of the canvas's voxels occupied by thin tubes (segments ``p0``-``p1``, (N, 3) mm,
    radius ``radii`` (N,)), for vessels thinner than a voxel: each segment's volume is spread over the
    voxels along its centre line and blurred by ``blur`` voxels (the partial-volume footprint), so a
    0.5 mm vessel in a 3 mm voxel adds the few per cent of tissue it really holds (a signed-distance
    occupancy would paint it a voxel wide). Returns (box, fraction in [0, 1]) or (None, None)."""
    from scipy import ndimage

    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    if len(p0) == 0:
        return None, None
    seg = p1 - p0
    length = np.sqrt((seg**2).sum(1))
    n = np.maximum(1, np.ceil(length / (0.5 * cv.spacing.min()))).astype(np.intp)
    which = np.repeat(np.arange(len(p0)), n)
    t = (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + 0.5) / np.repeat(n, n)
    pts = p0[which] + t[:, None] * seg[which]
    weight = (np.pi * np.asarray(radii, float) ** 2 * length / n)[which] / float(np.prod(cv.spacing))
    ijk = np.rint((pts - cv.origin) / cv.spacing).astype(np.intp)
    ok = ((ijk >= 0) & (ijk < np.array(cv.shape))).all(1)
    if not ok.any():
        return None, None
    ijk, weight = ijk[ok], weight[ok]
    pad = int(np.ceil(3 * blur))
    lo = np.maximum(ijk.min(0) - pad, 0)
    hi = np.minimum(ijk.max(0) + pad + 1, np.array(cv.shape))
    shp = tuple(int(v) for v in hi - lo)
    flat = np.ravel_multi_index(tuple((ijk - lo).T), shp)
    frac = np.bincount(flat, weights=weight, minlength=int(np.prod(shp))).reshape(shp).astype(F32)
    if blur > 0:
        frac = ndimage.gaussian_filter(frac, blur, mode="constant", truncate=2.5)
    np.minimum(frac, F32(1.0), out=frac)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)), frac
