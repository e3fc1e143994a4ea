"""Acquisition: the scan grid of each resolution preset, and what the scanner does to the ideal image.

Presets (``registry.COHORT_PRESETS``):

- ``tiny``: 48 x 48 in-plane over the field of view, 32 slices: for tests (a dozen cases in seconds).
- ``demo``: 128 x 128 in-plane over the institution's field of view, slice spacing max(thickness, 2.5 mm)
  over the thorax (250-320 mm, at most 128 slices): a 2-core laptop generates 711 cases in minutes.
- ``full``: the native 512 x 512 matrix at the institution's true slice thickness.

The ideal image is drawn with analytic partial-volume edges on the scan grid; the scanner then applies its
slice profile (z blur by thickness) and reconstruction-kernel point spread (in-plane blur), noise with the
kernel's noise power spectrum (:func:`kernel_nps`: soft kernels blotchy, sharp ones fine-grained), its HU
calibration offset, and vendor-dependent padding outside the reconstruction circle; values are rounded to
int16 HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage

from amt_core import registry

#: in-plane matrix and slice rule per preset
PRESETS: dict[str, dict] = {
    "tiny": dict(matrix=48, n_slices=32, min_dz=None),
    "demo": dict(matrix=128, n_slices=None, min_dz=2.5),
    "full": dict(matrix=512, n_slices=None, min_dz=None),
}
assert set(PRESETS) == set(registry.COHORT_PRESETS)
Z_EXTENT_MM = (250.0, 320.0)
#: low-frequency floor of the noise power spectrum (cycles/mm): FBP's ramp does not reach zero exactly
NPS_FLOOR = 0.03
#: vendors that write a constant -1024 outside the reconstruction circle
CIRCLE_PAD_VENDORS = ("Siemens", "Canon")


@dataclass(frozen=True)
class ScanGrid:
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]


def scan_grid(
    preset: str, fov_mm: float, thickness_mm: float, z_lo: float, z_hi: float, centre_xy=(0.0, 0.0)
) -> ScanGrid:
    """The grid of one scan: in-plane matrix over ``fov_mm`` centred on ``centre_xy``, slices z_lo..z_hi."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    n = cfg["matrix"]
    dx = fov_mm / n
    extent = float(np.clip(z_hi - z_lo, *Z_EXTENT_MM))
    # the scan starts at the top (lung apices); any extra length to the minimum extent goes caudally
    zc = z_hi - 0.5 * extent
    if cfg["n_slices"]:
        nz = cfg["n_slices"]
        dz = extent / nz
    else:
        dz = max(thickness_mm, cfg["min_dz"] or 0.0)
        nz = int(np.ceil(extent / dz))
    origin = (centre_xy[0] - dx * (n - 1) / 2.0, centre_xy[1] - dx * (n - 1) / 2.0, zc - dz * (nz - 1) / 2.0)
    return ScanGrid((n, n, nz), (dx, dx, dz), origin)


def kernel_nps(n_xy: tuple[int, int], dx: float, psf_mm: float) -> np.ndarray:
    """In-plane noise power spectrum of filtered back-projection on the ``rfft2`` frequencies of an
    ``n_xy`` grid of ``dx`` mm pixels, normalised to mean 1.

    FBP's ramp (``|f|``, plus a small floor) times the square of the kernel's apodization, here the
    modulation transfer function of a Gaussian point spread of sigma ``psf_mm``: soft kernels give
    coarse, blotchy noise with a low-frequency peak, sharp kernels fine-grained noise whose power rises
    up to the grid's Nyquist frequency. Every grid is treated as pixels averaged from a finer
    reconstruction: each pixel's footprint is averaged (``sinc``) and the power above the grid's Nyquist
    frequency is folded back (aliasing), as a reconstruction resampled to larger pixels does. That is
    exact for the reduced presets; on the ``full`` preset's native grid it slightly damps the sharpest
    kernels' power near Nyquist, which the realism tests (calibrated at the demo's pixel size) accept.
    """
    nx, ny = n_xy
    fx = np.fft.fftfreq(nx, dx)[:, None]
    fy = np.fft.rfftfreq(ny, dx)[None, :]
    fs = 1.0 / dx
    nps = np.zeros((nx, ny // 2 + 1))
    for kx in (-1, 0, 1):  # the grid's spectrum and its first aliases
        for ky in (-1, 0, 1):
            gx, gy = fx + kx * fs, fy + ky * fs
            f = np.hypot(gx, gy)
            mtf = np.exp(-2.0 * (np.pi * psf_mm * f) ** 2)
            nps += (f + NPS_FLOOR) * mtf**2 * (np.sinc(gx * dx) * np.sinc(gy * dx)) ** 2
    return nps / nps.mean()


def kernel_noise(rng: np.random.Generator, shape, dx: float, psf_mm: float) -> np.ndarray:
    """Zero-mean noise (float32, about unit sd) with the in-plane power spectrum :func:`kernel_nps` of the
    reconstruction kernel, drawn in the frequency domain (complex Gaussian spectrum shaped by the square root
    of the NPS); slices are independent (contiguous, not overlapping, reconstructions)."""
    half = (shape[0], shape[1] // 2 + 1, shape[2])
    spec = rng.standard_normal(half, dtype=np.float32) + 1j * rng.standard_normal(half, dtype=np.float32)
    spec *= np.sqrt(kernel_nps(shape[:2], dx, psf_mm)).astype(np.float32)[:, :, None]
    noise = fft.irfft2(spec, s=shape[:2], axes=(0, 1), workers=1).astype(np.float32, copy=False)
    return noise * np.float32(1.0 / max(float(noise.std()), 1e-12))


def acquire(
    ideal: np.ndarray,
    grid: ScanGrid,
    *,
    thickness_mm: float,
    psf_mm: float,
    noise_hu: float,
    hu_offset: float,
    vendor: str,
    patient_scale: float,
    preset: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Apply slice profile, kernel blur, kernel-shaped noise and calibration; return int16 HU."""
    dx, _, dz = grid.spacing
    img = ideal
    # slice profile: a slice of thickness t integrates ~t of tissue along z (FWHM = t)
    sz = thickness_mm / 2.355 / dz
    sxy = psf_mm / dx
    sig = (sxy if sxy >= 0.3 else 0.0, sxy if sxy >= 0.3 else 0.0, sz if sz >= 0.3 else 0.0)
    if any(sig):
        img = ndimage.gaussian_filter(img, sig, mode="nearest", truncate=3.0)
    # noise: thicker slices are quieter, larger patients noisier. The reduced presets keep a clinically
    # visible noise level (not the lower level their big voxels would give) so scanners stay distinguishable.
    sd = noise_hu / np.sqrt(max(thickness_mm, 0.625)) * patient_scale**1.5
    if preset != "full":
        sd = noise_hu * 0.55 * (2.5 / max(dz, 2.5)) ** 0.5 * patient_scale**1.5
    noise = kernel_noise(rng, img.shape, dx, psf_mm)
    noise *= np.float32(sd / max(float(noise.std()), 1e-6))
    img = img + noise
    img += np.float32(hu_offset)
    if vendor in CIRCLE_PAD_VENDORS:
        n = grid.shape[0]
        r = (np.arange(n) - (n - 1) / 2.0) / (n / 2.0)
        outside = (r[:, None] ** 2 + r[None, :] ** 2) > 1.0
        img[outside, :] = -1024.0
    np.rint(img, out=img)
    np.clip(img, -1024, 3071, out=img)
    return img.astype(np.int16)
