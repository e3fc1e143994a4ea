"""Data-parallel training with PyTorch DDP, launched by ``torchrun`` (multi-GPU, multi-node, or CPU/gloo).

    torchrun --standalone --nproc_per_node 4 -m amt_core.model.ddp --cohort cases.csv --out runs/x --preset full

Every rank runs :func:`amt_core.model.train.train` (:func:`amt_core.model.cli.ddp_main` parses the options);
rank 0 preprocesses, evaluates the tuning split and writes checkpoints, the others wait at barriers. Each rank
draws its own patches (see ``StepSampler``). This module is the process-group layer below ``train`` and
``trainer``: it imports nothing of amt_core.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str = "cpu") -> DistInfo:
    """Join the process group described by torchrun's environment (WORLD_SIZE > 1); else a single rank."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        owns = True
    return DistInfo(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        owns_group=owns,
    )


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj, info: DistInfo):
    """Rank 0's value of ``obj`` on every rank."""
    if info.world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if info.world <= 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def weights_digest(net) -> str:
    """SHA-256 of a module's parameters and buffers: equal on every rank of a healthy DDP run."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def wrap(net, info: DistInfo, device):
    if info.world <= 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def cleanup(info: DistInfo) -> None:
    if info.owns_group:
        import gc

        import torch.distributed as dist

        gc.collect()  # the DDP wrapper and its reducer (which hold the group) go first, while Python is whole
        dist.destroy_process_group()


def leave(code: int) -> None:
    """End a rank with ``code`` without interpreter finalisation.

    Gloo's C++ worker threads can outlive ``destroy_process_group`` when something still holds the group; torn
    down during finalisation they abort the process ("terminate called without an active exception", SIGABRT)
    after the work is done and written, and torchrun then reports the whole run failed. Everything a rank
    writes is closed by the time :func:`train` returns, so the rank flushes its streams and leaves at once.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover  (torchrun -m amt_core.model.ddp: the parser lives in cli.py)
    from amt_core.model.cli import ddp_main

    leave(ddp_main())
