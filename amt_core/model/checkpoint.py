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

    from amt_core.provenance import package_versions

    weights = {k: v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}
    path = Path(path)
    bad = _non_finite(weights)
    if bad:
        raise CheckpointError(f"{path}: not written: the weights {bad} are not finite (NaN or infinite)")
    state = {
        "format": FORMAT,
        "model": weights,
        "weights_sha256": weights_digest(weights),
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
    _save(state, path)
    return path


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def _save(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` atomically; a failed write (torch reports a full disk as a RuntimeError) is an OSError
    naming ``path``."""
    import torch

    try:
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(state, tmp)
    except RuntimeError as exc:
        import shutil

        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free there"
        except OSError:
            free = "free space unknown"
        raise OSError(
            f"{path}: could not write the checkpoint (is the disk full? {free}): {detail}"
        ) from None


def weights_digest(weights: dict[str, Any]) -> str:
    """SHA-256 of the model tensors (names, dtypes, shapes and bytes, in name order): a damaged weight that
    still loads (``torch.load`` does not check the archive's CRCs) no longer matches."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _non_finite(weights: dict[str, Any]) -> str:
    """The names of the floating tensors holding a NaN or an infinity (the first three), or ''."""
    import torch

    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


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
        raise CheckpointError(
            f"{path}: not an amt model checkpoint (damaged, or not written by `amt train`); {hint}"
        ) from None
    if (
        not isinstance(state, dict)
        or state.get("format") != FORMAT
        or not isinstance(state.get("model"), dict)
    ):
        raise CheckpointError(
            f"{path}: not an amt model checkpoint (no amt checkpoint format {FORMAT}); {hint}"
        )
    for key, required in (("config", True), ("extra", False), ("versions", False)):
        state[key] = _decoded(path, state, key, required)
    try:
        state["config"] = ModelConfig.from_dict(state["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its model config is not valid: {exc}") from None
    weights = state["model"]
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: its model weights are not all tensors (damaged); {hint}")
    bad = _non_finite(weights)
    if bad:
        raise CheckpointError(
            f"{path}: the weights {bad} are not finite (NaN or infinite): a diverged training or a damaged "
            "file; this model cannot predict"
        )
    digest = state.get("weights_sha256")  # absent in checkpoints written before it was recorded
    if digest is not None and digest != weights_digest(weights):
        raise CheckpointError(
            f"{path}: the weights do not match their recorded SHA-256 (the file is damaged); use an intact copy"
        )
    return state


def _decoded(path: Path, state: dict[str, Any], key: str, required: bool) -> dict[str, Any]:
    """The JSON object of ``state[key]`` (``{}`` when an optional one is absent); a CheckpointError otherwise."""
    raw = state.get(key)
    if (raw is None or raw == "") and not required:
        return {}
    if raw is None:
        raise CheckpointError(
            f"{path}: not an amt model checkpoint (it records no {key}); pass RUN_DIR/best.pt"
        )
    try:
        value = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: its {key} record is not valid JSON ({exc}); the file is damaged"
        ) from None
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{path}: its {key} record is a {type(value).__name__}, not a JSON object; the file is damaged"
        )
    return value


def update_config(path: str | Path, cfg: ModelConfig, **extra: Any) -> Path:
    """Rewrite a checkpoint's config (and merge ``extra`` into its extra record), atomically."""
    import torch

    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["config"] = json.dumps(cfg.to_dict(), sort_keys=True)
    state["extra"] = json.dumps(
        {**json.loads(state.get("extra") or "{}"), **extra}, sort_keys=True, default=float
    )
    _save(state, path)
    return path
