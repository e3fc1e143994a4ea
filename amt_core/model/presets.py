"""Model configuration: one frozen dataclass and the named presets (``cpu`` and ``full``).

Everything that shapes a run's result is decided by a :class:`ModelConfig` (and the seed): the network,
the patch, the preprocessing, the augmentation, the optimiser and the training length. The config travels
as a plain dict (JSON) inside every checkpoint and beside it as ``config.json``, so a checkpoint alone is
enough to predict. How one ``train()`` call runs (a time cap, a planned stop, DataLoader workers) is not
part of it: see :mod:`amt_core.model.run_control`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from amt_core.registry import MODEL_PRESETS

#: normalisation schemes: nnU-Net's CT scheme (clip to foreground percentiles + z-score) or a HU window
NORMALISATIONS = ("ct_fg", "window")
#: where inference runs: the whole body box, or the mediastinal box learnt from the training labels
ROIS = ("body", "mediastinum")
NETWORKS = ("unet", "dynunet")
OPTIMISERS = ("sgd", "adamw")
#: autocast precisions a run can resolve ``bf16`` to (ModelConfig.precision)
PRECISIONS = ("bf16", "fp16", "fp32")
#: train() settings that control one call without shaping its result (amt_core.model.run_control): not model
#: settings, never saved in a checkpoint (older checkpoints that still hold them load with them ignored)
RUN_CONTROLS = ("stop_after", "max_minutes", "num_workers")


@dataclass(frozen=True)
class ModelConfig:
    """Every setting that shapes a trained model: network, preprocessing, normalisation, sampling and
    augmentation, optimisation, inference and post-processing (frozen; :func:`get_config` gives a preset
    with overrides, :meth:`replace` a changed copy).

    Saved with the model (``config.json``, the checkpoints) and compared by ``train(resume=True)``; the
    settings of one call only (``RUN_CONTROLS``: ``stop_after``, ``max_minutes``, ``num_workers``) are not
    part of it. ``train`` fills in what it derives from the training cases (``target_spacing``,
    ``intensity_stats``, ``roi_box``) and the post-processing chosen on the tuning split
    (``min_component_ml``, ``min_component_conf``). The comments beside the fields say what each does.
    """

    preset: str = "cpu"
    # --- network -----------------------------------------------------------------------------------
    network: str = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # UNet channels / DynUNet filters per level
    strides: tuple[int, ...] = (2, 2, 2, 2)  # UNet: between levels; DynUNet: per level (first is 1)
    kernels: tuple[int, ...] = (3, 3, 3, 3, 3)  # DynUNet only
    num_res_units: int = 1  # UNet only
    deep_supervision: bool = False  # DynUNet only
    patch_size: tuple[int, int, int] = (96, 96, 64)
    batch_size: int = 2
    # --- preprocessing (the part that shapes the cached arrays) ----------------------------------------
    target_spacing: tuple[float, float, float] | None = None  # None: training-set median spacing
    body_threshold_hu: float = -500.0
    body_margin_mm: float = 10.0
    # --- normalisation (applied on the fly; statistics from the training set) --------------------------
    normalisation: str = "ct_fg"
    hu_window: tuple[float, float] = (-160.0, 240.0)
    intensity_stats: dict[str, float] | None = None  # {"lo", "hi", "mean", "std"}: filled by train()
    # --- sampling and augmentation -------------------------------------------------------------------
    fg_ratio: float = 1 / 3  # share of patches centred on tumour
    mirror_axes: tuple[int, ...] = (0,)  # RAS x (left-right) only: the mediastinum is not AP-symmetric
    p_affine: float = 0.2
    rotate_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.25)
    p_elastic: float = 0.0
    p_noise: float = 0.15
    p_blur: float = 0.15
    p_intensity: float = 0.15
    p_gamma: float = 0.2
    p_lowres: float = 0.2
    # --- optimisation ----------------------------------------------------------------------------------
    optimiser: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    max_epochs: int = 100
    steps_per_epoch: int = 100
    max_steps: int | None = None  # cap on the number of training steps (the schedule ends there)
    eval_every: int = 5  # epochs between tuning-set evaluations (and always after the last epoch)
    eval_max_cases: int | None = None
    # --- speed ---------------------------------------------------------------------------------------
    channels_last: bool = True
    bf16: bool = True  # autocast: bf16 on CPUs with native bf16 and on CUDA GPUs that support it
    # the precision bf16 resolved to when the run started ("bf16", "fp16" (CUDA) or "fp32"; None: not yet
    # resolved, as in older checkpoints): train() fills it in on a fresh run, every later step of the run
    # (resume, tuning evaluation, predict) uses it, whatever this machine's CPU or GPU would choose
    precision: str | None = None
    # torch's intra-op CPU threads while training on CPU (set for the run, restored after): the weights depend
    # on it (the conv and norm reductions split the work by thread), so it is a model setting; 2 keeps the
    # 2-core demo's speed and numbers
    cpu_threads: int = 2
    compile: bool = False
    # --- inference -----------------------------------------------------------------------------------
    roi: str = "mediastinum"
    roi_box: tuple[float, ...] | None = None  # (x0, x1, y0, y1) in body-box fractions: filled by train()
    overlap: float = 0.25
    sw_batch_size: int = 2
    threshold: float = 0.5
    postprocess: bool = True  # choose the component filter below on the tuning split after training
    min_component_ml: float = 0.0  # drop predicted components smaller than this (ml)
    min_component_conf: float = 0.0  # drop predicted components whose maximum probability is lower
    min_extent_mm: float = 15.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in MODEL_PRESETS:
            raise ValueError(
                f"unknown model preset {self.preset!r}; choose one of {', '.join(MODEL_PRESETS)}"
            )
        for name, allowed in (
            ("network", NETWORKS),
            ("normalisation", NORMALISATIONS),
            ("roi", ROIS),
            ("optimiser", OPTIMISERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if len(self.patch_size) != 3 or any(int(p) < 16 for p in self.patch_size):
            raise ValueError(f"patch_size must be three sizes >= 16, got {self.patch_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        # counts of the schedule: a zero or negative one would train nothing (or forever) and call it done
        problems = [
            f"{name}={getattr(self, name)} (a whole number, 1 or more)"
            for name in ("max_epochs", "steps_per_epoch", "eval_every", "batch_size", "sw_batch_size")
            if not _positive_int(getattr(self, name))
        ]
        if self.max_steps is not None and not _positive_int(self.max_steps):
            problems.append(f"max_steps={self.max_steps} (a whole number, 1 or more, or none)")
        cap = self.eval_max_cases  # 0 meant "no cap" (as None) in saved configs: still accepted
        if cap is not None and not (_positive_int(cap) or cap == 0):
            problems.append(f"eval_max_cases={cap} (a whole number, 0 or none for no cap)")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            problems.append(f"lr={self.lr} (a positive number)")
        problems += self._range_problems()
        if problems:
            raise ValueError("invalid model settings: " + "; ".join(problems))

    def _range_problems(self) -> list[str]:
        """Settings out of their range: each would give a silent wrong result or a traceback mid-run."""
        problems = []
        if not (_number(self.threshold) and 0.0 < self.threshold <= 1.0):
            problems.append(f"threshold={self.threshold} (a probability in (0, 1])")
        factor = _stride_product(self.strides)
        if factor is None:
            problems.append(f"strides={_show(self.strides)} (whole numbers, 1 or more)")
        elif any(int(p) % f for p, f in zip(self.patch_size, factor, strict=True)):
            problems.append(
                f"patch_size={_show(self.patch_size)} (each size a multiple of {_show(factor)}, the product "
                f"of strides={_show(self.strides)}: the network halves the patch that many times)"
            )
        if not all(_whole(a) and a in (0, 1, 2) for a in self.mirror_axes):
            problems.append(f"mirror_axes={_show(self.mirror_axes)} (axes 0, 1 or 2)")
        if not (
            len(self.hu_window) == 2
            and all(_number(v) for v in self.hu_window)
            and self.hu_window[0] < self.hu_window[1]
        ):
            problems.append(f"hu_window={_show(self.hu_window)} (low < high, in HU)")
        for name in ["fg_ratio"] + [f.name for f in dataclasses.fields(self) if f.name.startswith("p_")]:
            value = getattr(self, name)
            if not (_number(value) and 0.0 <= value <= 1.0):
                problems.append(f"{name}={value} (a probability in [0, 1])")
        if not (
            len(self.scale_range) == 2
            and all(_number(v) and v > 0 for v in self.scale_range)
            and self.scale_range[0] <= self.scale_range[1]
        ):
            problems.append(f"scale_range={_show(self.scale_range)} (0 < low <= high)")
        for name in ("min_component_ml", "min_component_conf", "body_margin_mm", "min_extent_mm"):
            value = getattr(self, name)
            if not (_number(value) and value >= 0):
                problems.append(f"{name}={value} (0 or more)")
        if _number(self.min_component_conf) and self.min_component_conf > 1:
            problems.append(f"min_component_conf={self.min_component_conf} (a probability in [0, 1])")
        if self.precision is not None and self.precision not in PRECISIONS:
            problems.append(
                f"precision={self.precision!r} ({', '.join(PRECISIONS)}, or none to resolve bf16)"
            )
        if not _positive_int(self.cpu_threads):
            problems.append(f"cpu_threads={self.cpu_threads} (a whole number, 1 or more)")
        return problems

    # --- (de)serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}  # others (e.g. an older stop_after) are ignored
        kwargs = {
            k: _tupled(v) if k not in ("intensity_stats", "extra") else v
            for k, v in data.items()
            if k in names
        }
        return cls(**kwargs)

    def replace(self, **overrides: Any) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(self)}
        control = sorted(set(overrides) & set(RUN_CONTROLS))
        if control:
            raise ValueError(
                f"{', '.join(control)}: not model settings but keyword arguments of train() "
                "(they control one call and are never saved with the model)"
            )
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(
                f"unknown model setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **{k: _tupled(v) for k, v in overrides.items()})

    @property
    def preprocessing_key(self) -> dict[str, Any]:
        """The settings that shape the cached (resampled, cropped) arrays: the cache key includes them."""
        return {
            "target_spacing": self.target_spacing,
            "body_threshold_hu": self.body_threshold_hu,
            "body_margin_mm": self.body_margin_mm,
        }


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stride_product(strides: Any) -> tuple[int, int, int] | None:
    """Per axis, the product of the strides (each an int, or one int per axis); None if one is not valid."""
    factor = [1, 1, 1]
    for s in strides:
        per_axis = tuple(s) if isinstance(s, list | tuple) else (s, s, s)
        if len(per_axis) != 3 or not all(_positive_int(v) for v in per_axis):
            return None
        factor = [f * v for f, v in zip(factor, per_axis, strict=True)]
    return (factor[0], factor[1], factor[2])


def _show(value: Any) -> str:
    return json.dumps(_listed(value))


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, list | tuple) else value


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list | tuple) else value


PRESETS: dict[str, ModelConfig] = {
    # A small MONAI UNet (2.4 M parameters, first level already strided) that trains on 2 CPU cores:
    # ~0.15-0.2 s per step of 2 x 64^3 patches with bf16 autocast and channels_last_3d (measured here).
    # AdamW, not nnU-Net's SGD: in a short CPU schedule it is what learns. After 300 steps on the demo
    # cohort, tuning Dice 0.40 with AdamW 1e-3 vs 0.00 with SGD 0.01/Nesterov 0.99 (same patches).
    "cpu": ModelConfig(
        preset="cpu",
        network="unet",
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=1,
        patch_size=(64, 64, 64),
        batch_size=2,
        optimiser="adamw",
        lr=1e-3,
        weight_decay=1e-4,
        max_epochs=40,
        steps_per_epoch=250,
        eval_every=2,
        roi="mediastinum",
        overlap=0.25,
    ),
    # nnU-Net 3d_fullres-style DynUNet with deep supervision, for a GPU.
    "full": ModelConfig(
        preset="full",
        network="dynunet",
        channels=(32, 64, 128, 256, 320, 320),
        strides=(1, 2, 2, 2, 2, 2),
        kernels=(3, 3, 3, 3, 3, 3),
        deep_supervision=True,
        patch_size=(128, 128, 128),
        batch_size=2,
        optimiser="sgd",
        lr=0.01,
        momentum=0.99,
        max_epochs=1000,
        steps_per_epoch=250,
        eval_every=10,
        roi="body",
        overlap=0.5,
        mirror_axes=(0, 1, 2),
        p_elastic=0.1,
        sw_batch_size=4,
    ),
}

#: DataLoader workers of a train() call that names none
PRESET_NUM_WORKERS: dict[str, int] = {"cpu": 1, "full": 6}


def get_config(preset: str = "cpu", **overrides: Any) -> ModelConfig:
    """The named preset with ``overrides`` applied (unknown names are an error)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset].replace(**overrides)
