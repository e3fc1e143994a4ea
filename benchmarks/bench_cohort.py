"""Benchmark the synthetic cohort generator (not a timed test).

    python benchmarks/bench_cohort.py                 # seconds per case: demo (6 cases) and full (2 cases)
    python benchmarks/bench_cohort.py --cohort        # + the whole 711-case demo cohort on 2 cores
    python benchmarks/bench_cohort.py --cohort --out data/demo_cohort --workers 2

Per-case numbers are single-process (render + NIfTI write). The whole-cohort number is wall time of
``build_cohort`` from an empty folder (the target must be < 600 s on 2 cores). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def per_case(preset: str, n: int, seed: int = 0) -> dict:
    from amt_core.synth.design import study_design
    from amt_core.synth.generate import nifti_gz_bytes, render_case

    design = study_design(seed=seed)
    times, render, sizes, voxels = [], [], [], []
    for row in design.head(n).to_dict("records"):
        t0 = time.perf_counter()
        image, label, affine = render_case(row, preset, seed)
        t1 = time.perf_counter()
        data = nifti_gz_bytes(image, affine) + nifti_gz_bytes(label, affine)
        t2 = time.perf_counter()
        render.append(t1 - t0)
        times.append(t2 - t0)
        sizes.append(len(data))
        voxels.append(int(image.size))
    return {
        "preset": preset,
        "cases": n,
        "seconds_per_case_mean": round(sum(times) / n, 3),
        "seconds_per_case_max": round(max(times), 3),
        "render_seconds_mean": round(sum(render) / n, 3),
        "voxels_mean": int(sum(voxels) / n),
        "bytes_per_case_mean": int(sum(sizes) / n),
    }


def whole_cohort(out: Path, workers: int, n_cases: int | None, fresh: bool) -> dict:
    from amt_core.synth.generate import build_cohort

    if fresh and out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    csv = build_cohort(
        out, preset="demo", n_cases=n_cases, seed=0, workers=workers, progress=True, resume=not fresh
    )
    wall = time.perf_counter() - t0
    n = sum(1 for _ in open(csv)) - 1
    size = sum(p.stat().st_size for p in out.rglob("*.nii.gz"))
    return {
        "cohort": str(out),
        "cases": n,
        "workers": workers,
        "wall_seconds": round(wall, 1),
        "seconds_per_case_wall": round(wall / n, 3),
        "under_10_minutes": wall < 600,
        "gigabytes": round(size / 1e9, 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo-cases", type=int, default=6)
    ap.add_argument("--full-cases", type=int, default=2, help="0 to skip the full-resolution preset")
    ap.add_argument("--cohort", action="store_true", help="also time the whole 711-case demo cohort")
    ap.add_argument("--out", default=None, help="cohort folder (default: a temporary folder, removed)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--n-cases", type=int, default=None, help="cohort size (default 711)")
    ap.add_argument("--keep", action="store_true", help="resume into --out instead of starting afresh")
    args = ap.parse_args(argv)

    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "load_avg": os.getloadavg(),
        }
    }
    result["demo"] = per_case("demo", args.demo_cases)
    if args.full_cases > 0:
        result["full"] = per_case("full", args.full_cases)
    if args.cohort:
        if args.out:
            result["cohort"] = whole_cohort(Path(args.out), args.workers, args.n_cases, fresh=not args.keep)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result["cohort"] = whole_cohort(Path(tmp) / "demo", args.workers, args.n_cases, fresh=True)
        result["machine"]["load_avg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
