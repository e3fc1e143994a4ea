"""Work of the study notebooks that is more than a few lines of a cell: each function is one cell's call,
so the notebooks stay a readable story and the logic is tested code."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from amt_core.evaluation import EvalConfig, EvaluationResult
    from amt_core.layout import RunLayout

#: the splits 03_evaluate predicts and evaluates: model selection (tune) and the external test
EVAL_SPLITS: tuple[str, ...] = ("tune", "test")


def predict_and_evaluate(
    layout: RunLayout, cases: pd.DataFrame, config: EvalConfig, *, splits: tuple[str, ...] = EVAL_SPLITS
) -> dict[str, EvaluationResult]:
    """Predict each split with the run's selected checkpoint (``RUN/train/best.pt``) into
    ``RUN/predictions/{split}/``, then evaluate it against the case table into ``RUN/evaluation/{split}/``.

    Every folder is replaced whole (written beside, then swapped in), so no file of an earlier model is
    left. Returns ``{split: EvaluationResult}`` in the order of ``splits``.
    """
    from amt_core.evaluation import evaluate_predictions
    from amt_core.model.inference import predict

    for split in splits:
        predict(layout.model_path, layout.cases_csv, layout.predictions(split), split=split, overwrite=True)
    results = {}
    for split in splits:
        results[split] = evaluate_predictions(cases, layout.predictions(split), split=split, config=config)
        results[split].save(layout.evaluation(split), overwrite=True)
    return results
