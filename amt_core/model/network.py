"""The networks (MONAI ``UNet`` for the ``cpu`` preset, nnU-Net-style ``DynUNet`` for ``full``) and the
device/precision choices that make them fast."""

from __future__ import annotations

import contextlib

from amt_core.model.presets import ModelConfig


def build_network(cfg: ModelConfig):
    """A 3D segmentation network with 1 input channel (CT) and 2 output channels (background, tumour)."""
    from monai.networks.nets import DynUNet, UNet

    if cfg.network == "unet":
        if len(cfg.strides) != len(cfg.channels) - 1:
            raise ValueError(
                f"UNet needs len(strides) == len(channels) - 1, got {cfg.strides} / {cfg.channels}"
            )
        return UNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=2,
            channels=cfg.channels,
            strides=cfg.strides,
            num_res_units=cfg.num_res_units,
            norm="instance",
        )
    n = len(cfg.channels)
    if not (len(cfg.strides) == len(cfg.kernels) == n):
        raise ValueError("DynUNet needs as many kernels and strides as channels (filters)")
    return DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        kernel_size=list(cfg.kernels),
        strides=list(cfg.strides),
        upsample_kernel_size=list(cfg.strides[1:]),
        filters=list(cfg.channels),
        norm_name="instance",
        deep_supervision=cfg.deep_supervision,
        deep_supr_num=max(1, min(n - 2, 3)),
        res_block=False,
    )


def cpu_has_bf16() -> bool:
    """Native bf16 on this CPU (AVX-512 BF16 or AMX); without it bf16 autocast is slower, not faster."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(cfg: ModelConfig, device) -> str:
    """The autocast precision of ``cfg`` on ``device``: ``cfg.precision`` once a run has resolved it, else what
    ``bf16`` gives on this hardware (bf16 on CPUs with native bf16 and on CUDA GPUs that support it, fp16 on
    other CUDA GPUs, fp32 on other CPUs)."""
    import torch

    if cfg.precision is not None:
        return cfg.precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if cfg.bf16 and torch.cuda.is_bf16_supported() else "fp16"
    if dev.type == "cpu" and cfg.bf16 and cpu_has_bf16():
        return "bf16"
    return "fp32"


def emulated_bf16_note(cfg: ModelConfig, device) -> str | None:
    """What to tell the user when ``cfg`` computes in bf16 (its recorded precision) on a CPU without native
    bf16: it still runs in bf16, emulated; None otherwise."""
    import torch

    if torch.device(device).type == "cpu" and cfg.precision == "bf16" and not cpu_has_bf16():
        return (
            "computes in bf16 (precision recorded when its training started), but this CPU has no native bf16: "
            "emulated, slower, and not bit-identical to a CPU with native bf16"
        )
    return None


def autocast(cfg: ModelConfig, device):
    """The autocast context for ``device`` at the config's precision (:func:`resolve_precision`)."""
    import torch

    dev = torch.device(device)
    precision = resolve_precision(cfg, dev)
    if precision == "fp32" or dev.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def uses_grad_scaler(cfg: ModelConfig, device) -> bool:
    import torch

    dev = torch.device(device)
    return dev.type == "cuda" and resolve_precision(cfg, dev) == "fp16"


def to_memory_format(tensor_or_module, cfg: ModelConfig):
    import torch

    if cfg.channels_last:
        return tensor_or_module.to(memory_format=torch.channels_last_3d)
    return tensor_or_module


def pick_device(device: str | None = None):
    """``device`` (cpu, cuda, cuda:N or mps) as a torch device, checked to exist here; by default cuda when
    available, else cpu. A ValueError names what is wrong."""
    import torch

    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {device!r}: not a device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                f"{'a CPU-only build' if torch.version.cuda is None else 'no usable GPU'}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: no such GPU (this machine has {count})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device}: MPS (Apple GPU) is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device}: not supported (use cpu, cuda or cuda:N)")
    return dev
