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


def autocast(cfg: ModelConfig, device):
    """The autocast context for ``device``: bf16 where it is fast (config ``bf16``), else a no-op."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        if cfg.bf16 and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cuda", dtype=torch.float16)
    if dev.type == "cpu" and cfg.bf16 and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_grad_scaler(cfg: ModelConfig, device) -> bool:
    import torch

    dev = torch.device(device)
    return dev.type == "cuda" and not (cfg.bf16 and torch.cuda.is_bf16_supported())


def to_memory_format(tensor_or_module, cfg: ModelConfig):
    import torch

    if cfg.channels_last:
        return tensor_or_module.to(memory_format=torch.channels_last_3d)
    return tensor_or_module


def pick_device(device: str | None = None):
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
