"""The model: MONAI 3D U-Net training with tuning-set model selection, and inference.

``train(cohort_csv, out_dir, preset="cpu", ...)`` and ``predict(model_path, source, out_dir, ...)`` are the
API (imported lazily, so ``import amt_core.model`` stays light). Modules: ``presets`` (config),
``preprocessing`` (MONAI pipeline), ``cache`` (preprocessed cases), ``patches`` (sampling, augmentation),
``network``, ``checkpoint``, ``train``, ``run_control`` (time cap, resume checks, ``training.json``),
``inference``, ``ddp`` (process group; ``torchrun -m amt_core.model.ddp``), ``cli``.
"""

from __future__ import annotations

__all__ = ["predict", "train"]


def __getattr__(name: str):
    if name == "train":
        from amt_core.model.train import train

        return train
    if name == "predict":
        from amt_core.model.inference import predict

        return predict
    raise AttributeError(name)
