"""Rebuild the bundled chest-CT backgrounds of this folder from ../shared/realdata/chest_backgrounds.

usage: python -m amt_core.synth.bundle_backgrounds SOURCE_DIR [OUT_DIR]   (OUT_DIR defaults to amt_core/synth/chest_backgrounds)

Each source volume (int16 HU, RAS, see that folder's SOURCES.md section 6) is resampled in-plane to the
demo cohort's resolution, a 128-voxel matrix across the scan's width (``MATRIX``; never finer than the
source), with a Gaussian anti-aliasing prefilter (sd 0.3 x the downsampling factor, in source voxels) and
linear interpolation; slices are kept (4-8 mm). Values are rounded to int16 HU. The files are written as
NIfTI-1 with qform = sform (code 1), gzipped at level 9 with mtime 0 and no file name, so the bytes are the
same on every run (with the same zlib). The licence files are copied unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

MATRIX = 128
NAMES = ("lung_dx_a0001", "lung_dx_a0002", "acrin_flt_breast_001", "acrin_flt_breast_013")
LICENCES = ("LICENSE-Lung-PET-CT-Dx.txt", "LICENSE-ACRIN-FLT-Breast.txt")


def resample(img: nib.Nifti1Image) -> nib.Nifti1Image:
    a = np.asarray(img.dataobj).astype(np.float32)
    sp = np.array(img.header.get_zooms()[:3], float)
    new = max(sp[0], a.shape[0] * sp[0] / MATRIX)
    r = np.array([new / sp[0], new / sp[1], 1.0])
    sigma = [0.3 * f if f > 1 else 0.0 for f in r]
    a = ndimage.gaussian_filter(a, sigma, mode="nearest", truncate=3.0)
    n = np.floor(np.array(a.shape) / r).astype(int)
    centres = [(np.arange(n[k]) + 0.5) * r[k] - 0.5 for k in range(3)]
    grid = np.meshgrid(*centres, indexing="ij")
    out = ndimage.map_coordinates(a, grid, order=1, mode="nearest")
    out = np.floor(out + 0.5).astype(np.int16)
    shift = np.eye(4)
    shift[:3, :3] = np.diag(r)
    shift[:3, 3] = 0.5 * r - 0.5
    aff = img.affine @ shift
    res = nib.Nifti1Image(out, aff)
    h = res.header
    h.set_data_dtype(np.int16)
    h.set_qform(aff, code=1)
    h.set_sform(aff, code=1)
    h.set_xyzt_units("mm", "sec")
    return res


def main(argv: list[str]) -> None:
    if not 1 <= len(argv) <= 2:
        sys.exit(__doc__.split("\n\n")[1])
    src = Path(argv[0])
    out = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parent / "chest_backgrounds"
    for name in NAMES:
        img = resample(nib.load(src / f"{name}.nii.gz"))
        data = gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)
        (out / f"{name}.nii.gz").write_bytes(data)
        print(
            f"{name}: shape {img.shape}, spacing {[round(float(z), 4) for z in img.header.get_zooms()]}, "
            f"{len(data)} B, sha256 {hashlib.sha256(data).hexdigest()}"
        )
    for lic in LICENCES:
        shutil.copyfile(src / lic, out / lic)


if __name__ == "__main__":
    main(sys.argv[1:])
