"""nnU-Net v2 interoperability: the probability maps that ``nnUNetv2_predict --save_probabilities`` writes.

nnU-Net writes, per case, ``{case}.nii.gz`` (the mask, the argmax of the probabilities), ``{case}.npz``
with one array ``probabilities`` of shape (classes, z, y, x) and ``{case}.pkl`` (its properties). The
array is in the order of nnU-Net's default SimpleITK reader: ``sitk.GetArrayFromImage``, i.e. the file's
voxel axes reversed; its geometry is the mask's, which nnU-Net writes from the same properties. So
class 1 transposed to (x, y, z) is in the mask file's voxel order, and is brought to RAS like the mask.
The ``.pkl`` is not read: the mask file already gives the geometry, and unpickling runs code.

Orientation is checked, not assumed: every voxel of the mask must have a tumour probability of at least
0.5 (nnU-Net's mask is the argmax of the same array; post-processing only removes voxels), otherwise the
file is refused (a map in another orientation, e.g. from nnU-Net's ``NibabelIOWithReorient`` reader, or of
another case).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: the class of the probabilities array that is the tumour (dataset.json: background 0, tumour 1)
TUMOUR_CLASS = 1


def read_npz_probability(
    npz_path: str | os.PathLike, mask_path: str | os.PathLike, mask: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """Tumour probability (float32, RAS voxel order) of nnU-Net's ``{case}.npz``, on the grid of the mask
    ``mask_path`` written beside it; ``mask``: that mask as read (RAS), to check the orientation."""
    import nibabel as nib

    from amt_core.data.volume import VolumeError, _to_ras, check_probability_fits_mask

    path = Path(npz_path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "probabilities" not in data.files:
                raise VolumeError(
                    f"{path}: no 'probabilities' array (has {data.files}); not written by "
                    "nnUNetv2_predict --save_probabilities"
                )
            probs = data["probabilities"]
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, VolumeError):
            raise
        raise VolumeError(f"{path}: unreadable .npz ({exc})") from None
    if probs.ndim != 4 or probs.shape[0] < 2:
        raise VolumeError(
            f"{path}: probabilities of shape {probs.shape}; expected (classes, z, y, x) with "
            f"class {TUMOUR_CLASS} the tumour"
        )
    if probs.shape[0] != 2:
        raise VolumeError(
            f"{path}: {probs.shape[0]} classes; amt evaluates one tumour class (background 0, "
            f"tumour {TUMOUR_CLASS})"
        )
    tumour = np.asarray(probs[TUMOUR_CLASS], dtype=np.float32).transpose(2, 1, 0)
    if not np.all(np.isfinite(tumour)) or tumour.min() < -1e-3 or tumour.max() > 1 + 1e-3:
        raise VolumeError(
            f"{path}: probabilities outside [0, 1] or not finite (range "
            f"{np.nanmin(tumour):g} .. {np.nanmax(tumour):g}); softmax outputs expected"
        )
    tumour = np.clip(tumour, 0.0, 1.0)
    if not str(mask_path).lower().endswith((".nii", ".nii.gz")):
        raise VolumeError(
            f"{path}: the mask beside it ({Path(mask_path).name}) must be NIfTI to place the probabilities"
        )
    header = nib.load(str(mask_path))
    raw_shape = tuple(int(n) for n in header.shape[:3])
    if tumour.shape != raw_shape:
        raise VolumeError(
            f"{path}: probabilities of shape (z, y, x) {probs.shape[1:]} do not fit the mask "
            f"{Path(mask_path).name} of shape (x, y, z) {raw_shape}"
        )
    ras, _ = _to_ras(tumour, np.asarray(header.affine, dtype=np.float64))
    check_probability_fits_mask(ras, mask, threshold, str(path), str(mask_path))
    return ras
