"""Training patches: foreground-oversampled crops from cached cases, then MONAI augmentation.

Sample ``g`` (the g-th patch of the run) depends only on ``(seed, g)``: its case, its centre and every
augmentation draw come from ``numpy.random.default_rng([seed, g])``. So the batches are the same whatever
the number of DataLoader workers, and a resumed run sees exactly the patches an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from amt_core.model.presets import ModelConfig

#: HU used to pad crops that reach outside the scan (air)
PAD_HU = -1024.0


def spatial_augmentation(cfg: ModelConfig, affine_size=None) -> list[tuple[str, float, Any]]:
    """(name, probability, MONAI transform) of the affine and the elastic deformation, each applied whenever
    the patch's own draw says so (``prob=1`` here: :class:`PatchDataset` draws whether it applies, so a
    patch that gets neither is cropped at the patch size and never resampled). The affine writes
    ``affine_size`` (``None``: its input's size); the elastic deformation always writes its input's size,
    since its random field, smoothed with zero padding, is weaker within a few sigmas of the edges."""
    from monai.transforms import Rand3DElasticd, RandAffined

    rot = math.radians(cfg.rotate_deg)
    s0, s1 = cfg.scale_range
    keys = ["image", "label"]
    out: list[tuple[str, float, Any]] = []
    if cfg.p_affine > 0:
        affine = RandAffined(
            keys,
            prob=1.0,
            spatial_size=affine_size,
            rotate_range=(rot, rot, rot),
            scale_range=((s0 - 1, s1 - 1),) * 3,
            mode=("bilinear", "nearest"),
            padding_mode="border",
        )
        out.append(("affine", cfg.p_affine, affine))
    if cfg.p_elastic > 0:
        elastic = Rand3DElasticd(
            keys,
            sigma_range=(9, 13),
            magnitude_range=(0, 200),
            prob=1.0,
            mode=("bilinear", "nearest"),
            padding_mode="border",
        )
        out.append(("elastic", cfg.p_elastic, elastic))
    return out


def augmentation(cfg: ModelConfig):
    """MONAI transforms of every patch after the spatial ones (flips, scanner noise/blur, contrast, thick
    slices): aimed at institution shift."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSimulateLowResolutiond,
    )

    keys = ["image", "label"]
    ts = [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in cfg.mirror_axes]
    ts += [
        RandGaussianNoised("image", prob=cfg.p_noise, std=0.1),
        RandGaussianSmoothd(
            "image", prob=cfg.p_blur, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)
        ),
        RandScaleIntensityd("image", factors=0.25, prob=cfg.p_intensity),
        RandShiftIntensityd("image", offsets=0.1, prob=cfg.p_intensity),
        RandAdjustContrastd("image", prob=cfg.p_gamma, gamma=(0.7, 1.5), retain_stats=True),
        RandSimulateLowResolutiond("image", prob=cfg.p_lowres, zoom_range=(0.5, 1.0)),
    ]
    return Compose(ts)


def crop_size(cfg: ModelConfig) -> tuple[int, int, int]:
    """The crop taken before augmentation: larger than the patch when rotations/scaling may pull in its
    surroundings, so the patch's corners hold real anatomy rather than padding."""
    if cfg.p_affine <= 0 and cfg.p_elastic <= 0:
        return tuple(cfg.patch_size)
    grow = 1.0 + 0.5 * math.sin(math.radians(cfg.rotate_deg))
    # a multiple of 8, plus one where the patch is odd: the patch then sits exactly in the crop's middle
    return tuple(int(math.ceil(p * grow / 8.0) * 8) + int(p) % 2 for p in cfg.patch_size)


def crop(array: np.ndarray, centre, size, fill) -> np.ndarray:
    """``size`` box around ``centre`` from ``array`` (a memory map is fine), padded with ``fill`` outside."""
    out = np.full(size, fill, dtype=array.dtype)
    src, dst = [], []
    for c, s, n in zip(centre, size, array.shape, strict=True):
        lo = int(c) - s // 2
        a, b = max(lo, 0), min(lo + s, n)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = array[tuple(src)]
    return out


class PatchDataset:
    """Map-style dataset: item ``g`` -> {"image": (1, *patch) float32, "label": (1, *patch) uint8}.

    Each spatial augmentation (affine, elastic) applies with its probability, drawn from the patch's own
    generator. A patch that gets neither is cropped at the patch's size directly; one that gets only the
    affine is cropped at :func:`crop_size` and the affine writes the patch's size (the middle of what it
    would write at the crop's size); one that gets the elastic deformation is resampled at the crop's size
    and its middle cut out. Then the flips and intensity transforms of :func:`augmentation`.
    """

    def __init__(self, cached_cases, cfg: ModelConfig, seed: int):
        from monai.transforms import CenterSpatialCropd

        from amt_core.model.preprocessing import normalise

        self.cached_cases = list(cached_cases)
        if not self.cached_cases:
            raise ValueError("no training cases")
        self.cfg = cfg
        self.seed = int(seed)
        self.size = crop_size(cfg)
        self.patch = tuple(int(p) for p in cfg.patch_size)
        self.normalise = normalise
        self.spatial = spatial_augmentation(cfg)  # at the crop's size
        self.affine_to_patch = {n: t for n, _, t in spatial_augmentation(cfg, self.patch)}.get("affine")
        self.middle = CenterSpatialCropd(["image", "label"], roi_size=list(self.patch))
        self.transform = augmentation(cfg)
        self._fg: dict[int, np.ndarray] = {}
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # memory maps, opened once per process

    def __getstate__(self) -> dict:
        # to a DataLoader worker without the opened memory maps (pickled, each would become a full copy)
        return {**self.__dict__, "_arrays": {}, "_fg": {}}

    def __len__(self) -> int:
        return 1 << 40

    def fg(self, k: int) -> np.ndarray:
        if k not in self._fg:
            self._fg[k] = self.cached_cases[k].fg_indices()
        return self._fg[k]

    def arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._arrays:
            self._arrays[k] = (self.cached_cases[k].image(), self.cached_cases[k].label())
        return self._arrays[k]

    def __getitem__(self, g: int) -> dict:
        import torch
        from monai.data import get_track_meta, set_track_meta

        rng = np.random.default_rng([self.seed, int(g)])
        k = int(rng.integers(len(self.cached_cases)))
        shape = self.cached_cases[k].shape
        fg = self.fg(k)
        if rng.random() < self.cfg.fg_ratio and fg.size:
            centre = np.unravel_index(int(fg[rng.integers(fg.size)]), shape)
        else:
            centre = [int(rng.integers(n)) for n in shape]
        spatial = [(name, t) for name, p, t in self.spatial if rng.random() < p]
        size = self.size if spatial else self.patch
        image, label = self.arrays(k)
        img = crop(image, centre, size, PAD_HU).astype(np.float32)
        lab = crop(label, centre, size, 0)
        data = {
            "image": torch.from_numpy(self.normalise(img, self.cfg))[None],
            "label": torch.from_numpy(lab.astype(np.float32))[None],
        }
        before = get_track_meta()
        set_track_meta(False)
        try:
            if [name for name, _ in spatial] == ["affine"]:  # only the affine: it writes the patch's size
                spatial = [("affine", self.affine_to_patch)]
            for _, t in spatial:
                t.set_random_state(seed=int(rng.integers(2**31 - 1)))
                data = t(data)
            if spatial and tuple(data["image"].shape[1:]) != self.patch:
                data = self.middle(data)
            self.transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
            out = self.transform(data)
        finally:
            set_track_meta(before)
        return {
            "image": torch.as_tensor(out["image"], dtype=torch.float32).contiguous(),
            "label": torch.as_tensor(out["label"]).round().to(torch.uint8).contiguous(),
        }


class StepSampler:
    """Indices of the patches of steps ``start..stop`` for one rank: rank r of w takes, at step s, the
    samples ``(s * w + r) * batch + b``, so every rank sees different patches and a run is resumable."""

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1):
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.batch

    def __iter__(self):
        for s in range(self.start, self.stop):
            base = (s * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)


def worker_init(_worker_id: int) -> None:
    import torch

    torch.set_num_threads(1)
