"""One preprocessing pipeline for training and inference (MONAI transforms, invertible).

A case goes: our reader (:func:`amt_core.data.volume.read_volume`, RAS+, HU) -> ``Orientationd`` RAS ->
``SpatialCropd`` to the body box (largest connected component above ``body_threshold_hu``, plus a
margin) -> ``Spacingd`` to the target spacing (bilinear for the image, nearest for the label). The
transforms record themselves on the MetaTensor, so :func:`invert` brings a probability map back to the
reader's grid with MONAI's own inverse. Intensity normalisation (:func:`normalise`) is applied on the fly
to patches and windows, so it never has to be baked into cached arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amt_core.data.volume import CT_MIN_BELOW, NotCTError  # noqa: F401  (the HU check lives at the door)
from amt_core.data.volume import check_ct as check_hu_range
from amt_core.model.presets import ModelConfig


@dataclass
class Preprocessed:
    """A case after preprocessing: arrays in the network's grid and what is needed to go back."""

    image: object  # monai MetaTensor (1, X, Y, Z), HU, float32
    label: object | None  # MetaTensor (1, X, Y, Z) uint8 or None
    transform: object  # the monai Compose that produced them (for inverse)
    body_start: tuple[int, int, int]
    body_end: tuple[int, int, int]
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray


def check_ct(array: np.ndarray, spacing, source: str, min_extent_mm: float) -> None:
    """Raise :class:`NotCTError` for images with no plausible HU range (the importer's check,
    :func:`amt_core.data.volume.check_ct`) or too small for the network."""
    check_hu_range(array, source)
    extent = [n * s for n, s in zip(array.shape, spacing, strict=True)]
    if min(extent) < min_extent_mm or min(array.shape) < 3:
        raise NotCTError(
            f"{source}: the image is {'x'.join(map(str, array.shape))} voxels "
            f"({' x '.join(f'{e:.0f}' for e in extent)} mm); the model needs at least {min_extent_mm:g} mm "
            "and 3 voxels along each axis"
        )


def body_box(
    array: np.ndarray, spacing, threshold_hu: float, margin_mm: float, source: str = "image"
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(start, end) voxel box of the body: the largest connected component above ``threshold_hu``."""
    import cc3d

    step = tuple(2 if n >= 128 else 1 for n in array.shape)  # a coarse grid is enough for a box
    coarse = np.ascontiguousarray(array[:: step[0], :: step[1], :: step[2]] > threshold_hu)
    if not coarse.any():
        raise NotCTError(f"{source}: no voxel above {threshold_hu:g} HU: no body in this image")
    labels, n = cc3d.connected_components(coarse, connectivity=6, return_N=True)
    if n > 1:
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        coarse = labels == int(counts.argmax())
    idx = np.nonzero(coarse)
    start, end = [], []
    for ax in range(3):
        margin = int(np.ceil(margin_mm / spacing[ax]))
        lo = int(idx[ax].min()) * step[ax] - margin
        hi = (int(idx[ax].max()) + 1) * step[ax] + margin
        start.append(max(lo, 0))
        end.append(min(hi, array.shape[ax]))
    return tuple(start), tuple(end)


def build_transform(start, end, spacing, with_label: bool):
    from monai.transforms import Compose, Orientationd, Spacingd, SpatialCropd

    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    return Compose(
        [
            Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            SpatialCropd(keys=keys, roi_start=list(start), roi_end=list(end)),
            Spacingd(keys=keys, pixdim=list(spacing), mode=modes, padding_mode="border", dtype=np.float32),
        ]
    )


def preprocess(volume, cfg: ModelConfig, label=None, spacing=None) -> Preprocessed:
    """Preprocess one :class:`~amt_core.data.volume.Volume` (and its label) to the network's grid."""
    import torch
    from monai.data import MetaTensor

    spacing = tuple(spacing or cfg.target_spacing or volume.spacing)
    array = np.asarray(volume.array, dtype=np.float32)
    check_ct(array, volume.spacing, volume.source or "image", cfg.min_extent_mm)
    start, end = body_box(array, volume.spacing, cfg.body_threshold_hu, cfg.body_margin_mm, volume.source)
    affine = torch.as_tensor(volume.affine, dtype=torch.float64)
    data = {"image": MetaTensor(torch.from_numpy(array)[None], affine=affine)}
    if label is not None:
        data["label"] = MetaTensor(
            torch.from_numpy(np.asarray(label.array, dtype=np.float32))[None], affine=affine.clone()
        )
    transform = build_transform(start, end, spacing, label is not None)
    out = transform(data)
    lab = out.get("label")
    if lab is not None:
        lab = lab.round().to(torch.uint8)
    return Preprocessed(
        image=out["image"],
        label=lab,
        transform=transform,
        body_start=start,
        body_end=end,
        source_shape=volume.shape,
        source_affine=np.asarray(volume.affine),
    )


def invert(pre: Preprocessed, prob) -> np.ndarray:
    """Bring a map in the preprocessed grid (X, Y, Z) back to the reader's RAS grid (MONAI inverse)."""
    import torch
    from monai.data import MetaTensor

    meta = MetaTensor(
        torch.as_tensor(prob, dtype=torch.float32)[None],
        meta={k: v for k, v in pre.image.meta.items() if k != "affine"},
    )
    meta.affine = pre.image.affine.clone()
    meta.applied_operations = [dict(op) for op in pre.image.applied_operations]
    out = pre.transform.inverse({"image": meta})["image"]
    arr = np.asarray(out.detach().cpu().numpy()[0], dtype=np.float32)
    if arr.shape != tuple(pre.source_shape):  # guard: MONAI must give the original grid back
        raise RuntimeError(f"inverse preprocessing gave shape {arr.shape}, expected {pre.source_shape}")
    return arr


def normalise(array, cfg: ModelConfig):
    """HU -> network input: foreground-percentile clip + z-score (``ct_fg``) or a HU window to [-1, 1]."""
    if cfg.normalisation == "window":
        lo, hi = cfg.hu_window
        centre, half = (hi + lo) / 2.0, (hi - lo) / 2.0
        return (array.clip(lo, hi) - centre) / half
    stats = cfg.intensity_stats
    if not stats:
        raise ValueError(
            "normalisation 'ct_fg' needs intensity_stats from the training set (train() sets them)"
        )
    return (array.clip(stats["lo"], stats["hi"]) - stats["mean"]) / max(stats["std"], 1e-6)


def intensity_stats(samples: np.ndarray) -> dict[str, float]:
    """nnU-Net's CT statistics from foreground (tumour) voxel samples of the training set."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.size == 0:
        raise ValueError(
            "no foreground voxels in the training set: cannot compute CT normalisation statistics"
        )
    lo, hi = np.percentile(samples, [0.5, 99.5])
    clipped = samples.clip(lo, hi)
    return {"lo": float(lo), "hi": float(hi), "mean": float(clipped.mean()), "std": float(clipped.std())}


def median_spacing(spacings) -> tuple[float, float, float]:
    """nnU-Net's default target spacing: the per-axis median of the training set's spacings."""
    arr = np.asarray(list(spacings), dtype=np.float64)
    return tuple(round(float(v), 4) for v in np.median(arr, axis=0))
