"""Evaluation engine: per-scan segmentation metrics, lesion-wise detection, both FROC readings,
bootstrap intervals and institution statistics.

Light to import: the public names below load their modules on first use.

- :class:`EvalConfig` (``config``): every convention, recorded in each results folder.
- :func:`evaluate_case` / :func:`evaluate_predictions` (``api``): one scan / a predictions folder.
- :class:`EvaluationResult` (``results``): the tables, ``save(dir)`` / ``load(dir)``, ``subset(ids)``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EvalConfig": "amt_core.evaluation.config",
    "evaluate_case": "amt_core.evaluation.api",
    "evaluate_predictions": "amt_core.evaluation.api",
    "collect": "amt_core.evaluation.api",
    "EvaluationResult": "amt_core.evaluation.results",
    "summarise": "amt_core.evaluation.results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'amt_core.evaluation' has no attribute {name!r}")
