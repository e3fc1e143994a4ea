"""Checkpoints: written atomically, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain containers of numbers and strings: the model, optimiser,
scheduler and grad-scaler states, the random states (python, numpy, torch), the epoch and step, the
training history, the full config and the package versions (both as JSON strings). It is enough on its
own to predict (``best.pt``) or to continue a killed run bit for bit (``last.pt``).
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from amt_core.atomic import atomic_path
from amt_core.model.presets import ModelConfig

FORMAT = 1


def rng_state() -> dict[str, Any]:
    import torch

    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])


def unwrap(model):
    """The plain module inside DDP and/or torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(
    path: str | Path,
    *,
    model,
    cfg: ModelConfig,
    optimizer=None,
    scheduler=None,
    scaler=None,
    epoch: int = 0,
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    import torch

    from amt_core.provenance import package_versions

    state = {
        "format": FORMAT,
        "model": {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": rng_state(),
        "epoch": int(epoch),
        "step": int(step),
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "versions": json.dumps(package_versions(("torch", "monai", "numpy")), sort_keys=True),
        "extra": json.dumps(extra or {}, sort_keys=True, default=float),
    }
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return path


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """The checkpoint's dict (``weights_only=True``), with ``config`` as a :class:`ModelConfig` and
    ``extra``/``versions`` decoded."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"model checkpoint {path} does not exist (pass RUN_DIR/best.pt from `amt train`)"
        )
    hint = "pass RUN_DIR/best.pt of an `amt train` run"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickles it will not load
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # a damaged or foreign file; torch's advice to load it unsafely is not passed on
        raise ValueError(
            f"{path}: not an amt model checkpoint (damaged, or not written by `amt train`); {hint}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise ValueError(f"{path}: not an amt model checkpoint (no amt checkpoint format {FORMAT}); {hint}")
    state["config"] = ModelConfig.from_dict(json.loads(state["config"]))
    state["extra"] = json.loads(state.get("extra") or "{}")
    state["versions"] = json.loads(state.get("versions") or "{}")
    return state


def update_config(path: str | Path, cfg: ModelConfig, **extra: Any) -> Path:
    """Rewrite a checkpoint's config (and merge ``extra`` into its extra record), atomically."""
    import torch

    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["config"] = json.dumps(cfg.to_dict(), sort_keys=True)
    state["extra"] = json.dumps(
        {**json.loads(state.get("extra") or "{}"), **extra}, sort_keys=True, default=float
    )
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return path
