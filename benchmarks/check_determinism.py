"""Does one seed give one model? Two short trainings with the ``cpu`` preset as the demo runs it (a fixed
step count under a ``max_minutes`` safety cap it does not reach; the cap can only stop a run, never reshape
it), then a tensor-by-tensor comparison of their weights.

    python benchmarks/check_determinism.py --cohort runs/demo/cohort/cases.csv [--steps 30 --epochs 2]

Exit status 0 when every weight tensor is equal, 1 otherwise. A check, not a timed test: it uses the
preprocessed-case cache (``$AMT_CACHE`` or ``--cache-dir``) and takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohort", required=True, help="cases.csv of a cohort with train and tune splits")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30, help="steps per epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--max-minutes", type=float, default=45.0, help="the safety cap (demo: 45)")
    args = ap.parse_args(argv)

    import torch

    from amt_core.model.checkpoint import load_checkpoint
    from amt_core.model.train import train

    with tempfile.TemporaryDirectory() as tmp:
        weights = []
        for name in ("a", "b"):
            t = time.monotonic()
            run = train(
                args.cohort,
                Path(tmp) / name,
                preset="cpu",
                seed=args.seed,
                progress=False,
                cache_dir=args.cache_dir,
                max_epochs=args.epochs,
                steps_per_epoch=args.steps,
                max_minutes=args.max_minutes,
                postprocess=False,
            )
            summary = json.loads((run / "training.json").read_text())
            if not summary["complete"]:
                print(f"run {name}: training is incomplete ({summary}); raise --max-minutes")
                return 1
            weights.append(load_checkpoint(run / "last.pt")["model"])
            print(f"run {name}: {args.epochs * args.steps} steps in {time.monotonic() - t:.0f} s")
    a, b = weights
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    print(
        f"{len(a) - len(differ)} of {len(a)} weight tensors identical"
        + (f"; differ: {', '.join(differ[:5])}" if differ else "")
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
