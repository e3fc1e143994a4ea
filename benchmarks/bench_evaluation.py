"""Evaluation speed: the engine vs a reference pipeline built from the field's tools, side by side.

    python benchmarks/bench_evaluation.py                  # 164 scans of 512x512x300 (the external test)
    python benchmarks/bench_evaluation.py --n-scans 16     # fewer scans; totals extrapolated linearly

Each scan is generated in memory (a lobulated tumour of 10-300 ml, a prediction of Dice ~0.8 with a
smooth probability map, and 0-3 false-positive blobs plus specks), evaluated by both pipelines, then
dropped, so one scan is held at a time. Generation is not timed. Both pipelines do the full external-test
evaluation: per-scan Dice/IoU/precision/recall/HD95/mean surface distance, candidates (26-connected
components with max-probability confidence), lesion matching at the 19 IoU thresholds, FROC reading A at
IoU 0.1/0.3/0.5 and reading B, and 10,000-resample bootstrap intervals of every mean and of the FROC band.

Reference: MONAI ``DiceMetric``/``MeanIoU``/``compute_hausdorff_distance``/``compute_average_surface_distance``,
``scipy.ndimage.label`` + ``scipy.ndimage.maximum``, pairwise IoU from full-volume masks (as picai_eval),
``linear_sum_assignment`` per threshold, MONAI ``compute_froc_curve_data`` + ``numpy.interp``, and a
Python loop over bootstrap resamples. ``--ref-bootstrap`` runs fewer reference resamples and scales their
time linearly (the loop's iterations are independent). NIfTI decoding is reported on its own line.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from amt_core import registry
from amt_core.evaluation.api import collect, evaluate_case
from amt_core.evaluation.config import EvalConfig
from amt_core.evaluation.results import summarise


# --- synthetic scans --------------------------------------------------------------------------------------
def _blob(shape, centre, radii_vox, lobes, rng, peak=1.0):
    """Smooth 'probability' of a union of ellipsoids inside its own box: (box slices, float32 field)."""
    reach = np.ceil(np.max(radii_vox, axis=0) * 1.6 + np.abs(lobes).max(axis=0) + 2).astype(int)
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach, shape)
    grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    q = None
    for off, rad in zip(lobes, radii_vox, strict=True):
        c = centre + off
        qi = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, rad, strict=True))
        q = qi if q is None else np.minimum(q, qi)
    field = (peak / (1.0 + np.exp(8.0 * (q - 1.0)))).astype(np.float32)
    field[field < 1e-3] = 0
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), field


def make_scan(seed: int, shape=(512, 512, 300)):
    """(label uint8, mask uint8, prob float32, spacing) of one realistic scan."""
    rng = np.random.default_rng(seed)
    shape = np.array(shape)
    spacing = np.array([rng.uniform(0.6, 0.9)] * 2 + [rng.choice([0.625, 1.0, 1.25, 1.5])])
    volume_ml = float(np.exp(rng.uniform(np.log(10), np.log(300))))
    r_mm = (3 * volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    centre = (shape * [0.5, 0.4, 0.6] + rng.normal(0, 10, 3)).astype(int)
    n_lobes = int(rng.integers(1, 4))
    radii = r_mm * rng.uniform(0.6, 1.1, (n_lobes, 3)) / spacing
    lobes = (rng.normal(0, 0.35, (n_lobes, 3)) * radii).astype(int)
    # np.full touches every page, as arrays decoded from files do (np.zeros would be lazily mapped)
    label = np.full(tuple(shape), 0, np.uint8)
    box, field = _blob(shape, centre, radii, lobes, rng)
    label[box] = field >= 0.5
    prob = np.full(tuple(shape), 0, np.float32)
    if rng.random() > 0.05:  # the model finds the tumour in 95 % of scans
        shift = (rng.normal(0, 0.1, 3) * radii.mean(axis=0)).astype(int)
        box, field = _blob(
            shape,
            centre + shift,
            radii * rng.uniform(0.85, 1.1, (n_lobes, 3)),
            lobes,
            rng,
            peak=rng.uniform(0.8, 1.0),
        )
        prob[box] = np.maximum(prob[box], field)
    for _ in range(rng.poisson(0.8)):  # false-positive blobs of 0.5-10 ml in the chest
        rr = (3 * rng.uniform(500, 10_000) / (4 * np.pi)) ** (1 / 3) / spacing
        c = (shape * rng.uniform(0.2, 0.8, 3)).astype(int)
        box, field = _blob(shape, c, rr[None], np.zeros((1, 3), int), rng, peak=rng.uniform(0.55, 0.95))
        prob[box] = np.maximum(prob[box], field)
    for _ in range(rng.integers(0, 4)):  # specks
        c = (shape * rng.uniform(0.2, 0.8, 3)).astype(int)
        prob[c[0] : c[0] + 2, c[1] : c[1] + 2, c[2] : c[2] + 2] = rng.uniform(0.5, 0.7)
    return label, (prob >= 0.5).astype(np.uint8), prob, tuple(spacing)


# --- reference pipeline (the field's tools) ---------------------------------------------------------------
#: seconds spent in each stage of the reference pipeline (summed over scans)
STAGES: dict[str, float] = {}


def _lap(name: str, t0: float) -> float:
    now = time.perf_counter()
    STAGES[name] = STAGES.get(name, 0.0) + now - t0
    return now


def reference_case(label, mask, prob, spacing, thresholds, froc_thresholds):
    import torch
    from monai.metrics import (
        DiceMetric,
        MeanIoU,
        compute_average_surface_distance,
        compute_hausdorff_distance,
    )
    from scipy import ndimage
    from scipy.optimize import linear_sum_assignment

    t = time.perf_counter()
    y = torch.from_numpy(label)[None, None].float()
    yp = torch.from_numpy(mask)[None, None].float()
    rec = {
        "dice": float(DiceMetric(include_background=True)(yp, y)),
        "iou": float(MeanIoU(include_background=True)(yp, y)),
    }
    tp_vox = float((yp * y).sum())
    rec["precision"] = tp_vox / float(yp.sum())
    rec["recall"] = tp_vox / float(y.sum())
    ml = float(np.prod(spacing)) / 1000
    rec["ref_volume_ml"], rec["pred_volume_ml"] = np.count_nonzero(label) * ml, np.count_nonzero(mask) * ml
    t = _lap("MONAI Dice/IoU, precision/recall, volumes", t)
    rec["hd95_mm"] = float(
        compute_hausdorff_distance(yp, y, include_background=True, percentile=95, spacing=spacing)
    )
    rec["msd_mm"] = float(
        compute_average_surface_distance(yp, y, include_background=True, symmetric=True, spacing=spacing)
    )
    del y, yp
    t = _lap("MONAI HD95 + mean surface distance", t)
    structure = np.ones((3, 3, 3))
    cand, n_c = ndimage.label(prob >= 0.5, structure=structure)
    les, n_l = ndimage.label(label, structure=structure)
    t = _lap("scipy.ndimage.label x2", t)
    conf = np.asarray(ndimage.maximum(prob, cand, np.arange(1, n_c + 1)), dtype=float).reshape(-1)
    t = _lap("scipy.ndimage.maximum (confidences)", t)
    les_masks = [les == j for j in range(1, n_l + 1)]
    les_sizes = [np.count_nonzero(m) for m in les_masks]
    iou = np.zeros((n_c, n_l))
    for i in range(1, n_c + 1):
        ci = cand == i
        size = np.count_nonzero(ci)
        for j, lj in enumerate(les_masks):
            inter = np.count_nonzero(ci & lj)
            iou[i - 1, j] = inter / (size + les_sizes[j] - inter)
    t = _lap("pairwise IoU from full-volume masks", t)
    tp, fp = [], []
    for thr in thresholds:
        hits = iou >= thr
        r, c = linear_sum_assignment(np.where(hits, 1.0 + iou, 0.0), maximize=True)
        tp.append(int(hits[r, c].sum()))
        fp.append(int((~hits.any(axis=1)).sum()))
    froc = {}
    for thr in froc_thresholds:
        hits = iou >= thr
        tp_probs = np.array([conf[hits[:, j]].max() if hits[:, j].any() else 0.0 for j in range(n_l)])
        froc[thr] = (conf[~hits.any(axis=1)], tp_probs)
    _lap("matching at 19 IoU thresholds, FROC inputs", t)
    return rec, np.array(tp), np.array(fp), n_l, froc


def reference_bootstrap(per_case, tp, fp, n_lesions, froc, n_bootstrap, seed, points):
    from monai.metrics import compute_froc_curve_data

    rng = np.random.default_rng(seed)
    n = len(per_case)
    reps_mean, reps_band, reps_b = [], [], []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        reps_mean.append(np.nanmean(per_case[idx], axis=0))
        band = []
        for t in froc:
            fp_p = np.concatenate([froc[t][i][0] for i in idx])
            tp_p = np.concatenate([froc[t][i][1] for i in idx])
            fps, sens = compute_froc_curve_data(fp_p, tp_p, int(n_lesions[idx].sum()), n)
            band.append(np.interp(points, fps[::-1], sens[::-1]))
        reps_band.append(band)
        reps_b.append(np.r_[tp[idx].sum(0) / n_lesions[idx].sum(), fp[idx].sum(0) / n])
    return [np.percentile(np.array(r), [2.5, 97.5], axis=0) for r in (reps_mean, reps_band, reps_b)]


# --- the run ----------------------------------------------------------------------------------------------
def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-scans", type=int, default=registry.STUDY_DESIGN["n_test"])
    p.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    p.add_argument("--n-bootstrap", type=int, default=10_000)
    p.add_argument(
        "--ref-bootstrap",
        type=int,
        help="reference bootstrap resamples actually run (default: --n-bootstrap)",
    )
    p.add_argument(
        "--target-scans",
        type=int,
        default=registry.STUDY_DESIGN["n_test"],
        help="scan count the totals are extrapolated to (linearly)",
    )
    p.add_argument("--skip-reference", action="store_true")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # a MONAI-internal deprecation notice
    n, shape, config = args.n_scans, tuple(args.shape), EvalConfig(n_bootstrap=args.n_bootstrap)
    scale = args.target_scans / n
    print(
        f"{n} scans of {shape}, {args.n_bootstrap} bootstrap resamples; totals extrapolated x{scale:.2f} "
        f"to {args.target_scans} scans"
    )

    # warm both pipelines up (imports, first-call costs) on a small scan
    small = make_scan(0, (96, 96, 64))
    evaluate_case(small[0], small[1], small[3], config, prob=small[2])
    if not args.skip_reference:
        reference_case(small[0], small[1], small[2], small[3], config.iou_sweep, config.froc_iou_thresholds)
        STAGES.clear()

    # engine: stream scans, evaluate, drop
    evaluations, t_engine, t_gen, cpu_engine = [], 0.0, 0.0, 0.0
    for s in range(n):
        t0 = time.perf_counter()
        label, mask, prob, spacing = make_scan(s, shape)
        t1, c1 = time.perf_counter(), time.process_time()
        evaluations.append(evaluate_case(label, mask, spacing, config, prob=prob))
        t_gen, t_engine = t_gen + t1 - t0, t_engine + time.perf_counter() - t1
        cpu_engine += time.process_time() - c1
        del label, mask, prob
    t0, c0 = time.perf_counter(), time.process_time()
    result = summarise(
        collect(evaluations, [f"s{s:03d}" for s in range(n)], [f"I{s % 121}" for s in range(n)]), config
    )
    t_stats, cpu_stats = time.perf_counter() - t0, time.process_time() - c0
    rss_engine = _peak_rss_gib()
    engine_total = (t_engine + t_stats) * scale  # both sides extrapolated linearly
    print(
        f"engine   : per-scan {t_engine / n * 1000:7.1f} ms/scan, statistics {t_stats:6.2f} s "
        f"(10k-resample CIs of {len(result.cis)} means, FROC bands, reading B); CPU time "
        f"{cpu_engine / n * 1000:.1f} ms/scan + {cpu_stats:.2f} s"
    )
    print(
        f"engine   : total {t_engine + t_stats:7.2f} s for {n} scans -> {engine_total:7.2f} s for "
        f"{args.target_scans} (peak RSS {rss_engine:.2f} GiB incl. the generator)"
    )
    print(f"(generation, not timed: {t_gen / n:.2f} s/scan)")
    _nifti_line(shape)
    if args.skip_reference:
        return 0

    thresholds, froc_t = config.iou_sweep, config.froc_iou_thresholds
    rows, tps, fps, nls, frocs, t_ref, cpu_ref = [], [], [], [], [], 0.0, 0.0
    names = ["dice", "iou", "precision", "recall", "hd95_mm", "msd_mm", "ref_volume_ml", "pred_volume_ml"]
    for s in range(n):
        label, mask, prob, spacing = make_scan(s, shape)
        t0, c0 = time.perf_counter(), time.process_time()
        rec, tp, fp, n_l, fr = reference_case(label, mask, prob, spacing, thresholds, froc_t)
        t_ref, cpu_ref = t_ref + time.perf_counter() - t0, cpu_ref + time.process_time() - c0
        rows.append([rec[k] for k in names])
        tps.append(tp), fps.append(fp), nls.append(n_l)
        frocs.append(fr)
        del label, mask, prob
        print(f"  reference scan {s + 1}/{n}: {t_ref / (s + 1):.1f} s/scan so far", flush=True)
    per_case = np.array(rows)
    froc = {t: [f[t] for f in frocs] for t in froc_t}
    ref_bootstrap = args.ref_bootstrap or args.n_bootstrap
    t0, c0 = time.perf_counter(), time.process_time()
    reference_bootstrap(
        per_case, np.array(tps), np.array(fps), np.array(nls), froc, ref_bootstrap, 0, config.fp_points
    )
    t_ref_stats = (time.perf_counter() - t0) * args.n_bootstrap / ref_bootstrap
    cpu_ref_stats = (time.process_time() - c0) * args.n_bootstrap / ref_bootstrap
    ref_total = t_ref * scale + t_ref_stats * scale
    print(
        f"reference: per-scan {t_ref / n * 1000:7.1f} ms/scan, statistics {t_ref_stats:6.2f} s "
        f"({ref_bootstrap} resamples run{', scaled to ' + str(args.n_bootstrap) if ref_bootstrap != args.n_bootstrap else ''}); "
        f"CPU time {cpu_ref / n * 1000:.1f} ms/scan + {cpu_ref_stats:.2f} s"
    )
    print(
        f"reference: total {t_ref + t_ref_stats:7.2f} s for {n} scans -> {ref_total:7.2f} s for "
        f"{args.target_scans} (bootstrap extrapolated linearly too: conservative, it grows faster)"
    )
    ours = result.per_case[names].to_numpy()
    diff = np.nanmax(np.abs(ours - per_case), axis=0)
    print("reference stages (s/scan): " + ", ".join(f"{k} {v / n:.2f}" for k, v in STAGES.items()))
    print(
        "agreement: max |engine - reference| per metric: "
        + ", ".join(f"{k} {d:.2g}" for k, d in zip(names, diff, strict=True))
    )
    b = result.froc_iou
    same = (b["tp"].to_numpy() == np.sum(tps, axis=0)).all() and (
        b["fp"].to_numpy() == np.sum(fps, axis=0)
    ).all()
    print(f"agreement: reading B counts at 19 IoU thresholds identical: {same}")
    cpu_ratio = (cpu_ref + cpu_ref_stats) / (cpu_engine + cpu_stats)
    print(
        f"SPEED-UP : {ref_total / engine_total:.1f}x wall, {cpu_ratio:.1f}x CPU time (full evaluation, "
        f"{args.target_scans} scans); peak RSS overall {_peak_rss_gib():.2f} GiB"
    )
    return 0


def _nifti_line(shape):
    """NIfTI decoding, its own line: the engine's reader on one label, mask and probability map (.nii.gz)."""

    from amt_core.data.volume import write_volume
    from amt_core.evaluation.api import _read_case

    label, mask, prob, spacing = make_scan(0, shape)
    with tempfile.TemporaryDirectory() as tmp:
        affine = np.diag([*spacing, 1.0])
        write_volume(label, affine, Path(tmp) / "label.nii.gz")
        write_volume(mask, affine, Path(tmp) / "s.nii.gz")
        write_volume(prob, affine, Path(tmp) / "s_prob.nii.gz")
        t0 = time.perf_counter()
        _read_case(str(Path(tmp) / "label.nii.gz"), Path(tmp), "s")
        dt = time.perf_counter() - t0
    print(
        f"NIfTI    : reading one scan's label + mask + float32 probability map (.nii.gz) {dt:.2f} s "
        "(not in the totals above; `amt evaluate` reads the next scan while evaluating the current one)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
