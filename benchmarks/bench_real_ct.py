"""How a trained demo model behaves on real CT (issue 15 §4): the run's real-anatomy subset (tumours inserted
into real chest CT of patients training never saw, from ``RUN/tables/real_anatomy.csv``) and the real,
tumour-free volumes of ``../shared/realdata``, where every component the model marks is a false positive.

    python benchmarks/bench_real_ct.py --run runs/demo [--realdata ../shared/realdata] [--results benchmarks/RESULTS.md]

For each real volume: the model's predicted mask (``amt predict``'s post-processed mask) split into
connected components (26-connectivity), their number and volume, the largest one's volume, maximum
probability and axial position (fraction of the scan from its caudal end: near 0 is the upper abdomen),
and how many candidates reach probability 0.5. With ``--results`` the Markdown table is written into that
file between ``<!-- real-ct:start -->`` and ``<!-- real-ct:end -->`` (added at the end when absent).

``--insertions N`` inserts N more tumours into each bundled background (the study design's histology and
size for seeds 100..100+N-1, inserted as ``amt cohort --backgrounds`` does) and predicts each as a scan:
four patients still, but 4N tumours instead of the run's 4. Each row has the border contrast, the share of
the tumour's outline a reader sees: the fraction of a ``SHELL_MM`` in-plane shell around it whose 3 x 3
median HU differs from the tumour's median by at least ``MIN_CONTRAST_HU``. The same measure is given for
the run's synthetic test tumours, so the two can be compared, with what the outline lies against: lung,
fat, or tissue of the tumour's own HU (the insertion's own ``outline_composition``), and its level below the
top of the insertion levels (the thoracic inlet).
``--context`` predicts each insertion twice more, with the soft tissue within ``CONTEXT_MM`` of the tumour made
lung and then fat: whether the model finds a tumour once it stands out against lung or fat says whether it
fails for what surrounds the tumour.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

#: the tumour-free real volumes (relative to ``--realdata``): what each shows
VOLUMES = {
    "chest_backgrounds/lung_dx_a0001.nii.gz": "chest (Lung-PET-CT-Dx), neck to upper abdomen",
    "chest_backgrounds/lung_dx_a0002.nii.gz": "chest (Lung-PET-CT-Dx), aortic arch to upper abdomen",
    "chest_backgrounds/acrin_flt_breast_001.nii.gz": "chest (ACRIN-FLT-Breast), neck to upper abdomen",
    "chest_backgrounds/acrin_flt_breast_013.nii.gz": "chest (ACRIN-FLT-Breast), inlet to mid heart",
    "cip_thorax_lowres/ct.nii.gz": "whole thorax (CIP), 4 mm",
    "itkelastix_thorax/dicom_subset": "mid-thorax, 10 DICOM slices",
    "ts_abdomen_3mm/ct.nii.gz": "upper abdomen + lung bases (TotalSegmentator)",
}
START, END = "<!-- real-ct:start -->", "<!-- real-ct:end -->"
#: the first design seed of ``--insertions`` (the run's own real-anatomy cases use the run's seed)
INSERTION_SEED = 100


#: ``--context``: the soft tissue (``CONTEXT_SOFT_HU``) within ``CONTEXT_MM`` of an inserted tumour is replaced
#: by each of these HU (lung, fat) and the scan predicted again: what the model needs around a tumour to find it
CONTEXT_MM = 20.0
CONTEXT_SOFT_HU = (-60.0, 200.0)
CONTEXTS = {"lung": -850.0, "fat": -100.0}


def top_level(background: np.ndarray, spacing) -> int | None:
    """The highest slice where tumours are inserted into ``background`` (``find_prevascular_space``'s levels:
    the thoracic inlet, or the first slice below it where a sternum is found); None where it finds none."""
    from amt_core.synth.backgrounds import InsertionRejected, find_prevascular_space

    try:
        return int(find_prevascular_space(np.asarray(background, np.float32), spacing).z_levels[1])
    except InsertionRejected:
        return None


def below_top_level_mm(top: int | None, label: np.ndarray, spacing) -> float:
    """How far (mm) the tumour's centroid lies below slice ``top`` (:func:`top_level`); NaN without one."""
    if top is None:
        return float("nan")
    return float((top - np.argwhere(label > 0)[:, 2].mean()) * float(spacing[2]))


def with_context(
    image: np.ndarray, label: np.ndarray, spacing, hu: float, mm: float = CONTEXT_MM
) -> np.ndarray:
    """``image`` with the soft tissue within ``mm`` (3D, outside the label) of the tumour set to ``hu``."""
    t = label > 0
    near = ndimage.distance_transform_edt(~t, sampling=spacing) <= mm
    soft = (image > CONTEXT_SOFT_HU[0]) & (image < CONTEXT_SOFT_HU[1])
    return np.where(near & ~t & soft, np.asarray(hu, image.dtype), image)


def _predicted(model: Path, image, affine, folder: Path, name: str):
    """The model's mask and probability for one scan (written as NIfTI and predicted as ``amt predict`` does)."""
    import nibabel as nib

    from amt_core.model.inference import predict

    scan = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), scan)
    pred = predict(model, scan, folder / name, progress=False)
    case_id = next(iter(json.loads((pred / "predictions.json").read_text())["cases"]))
    mask = np.asarray(nib.load(pred / f"{case_id}.nii.gz").dataobj) > 0
    prob = np.asarray(nib.load(pred / f"{case_id}_prob.nii.gz").dataobj, dtype=np.float32)
    return mask, prob


def _scores(mask: np.ndarray, prob: np.ndarray, label: np.ndarray, spacing) -> dict:
    """Detection (the evaluation engine's components and IoU), Dice, the tumour's maximum probability, the
    mask beyond the tumour, and how far (mm, + anterior) the mask next to the tumour lies from its centroid."""
    from amt_core.evaluation.lesions import find_components, overlap_matrix, pair_overlap
    from amt_core.evaluation.segmentation import overlap_scores

    t = label > 0
    found, tumour = find_components(mask), find_components(t)
    inter = overlap_matrix(found, tumour)
    iou = float(pair_overlap(inter, found.voxels, tumour.voxels).max(initial=0.0))
    near = mask & ndimage.binary_dilation(t, iterations=3)
    shift = (
        (np.argwhere(near)[:, 1].mean() - np.argwhere(t)[:, 1].mean()) * spacing[1] if near.any() else np.nan
    )
    return {
        "tumour_max_prob": float(prob[t].max()),
        "dice": overlap_scores(int(t.sum()), int(mask.sum()), int((mask & t).sum()))["dice"],
        "best_iou": iou,
        "detected": bool(iou >= 0.5),
        "fp_ml": float((mask & ~ndimage.binary_dilation(t, iterations=2)).sum())
        * float(np.prod(spacing))
        / 1000.0,
        "ap_offset_mm": float(shift),
    }


def marked_without_tumour(mask: np.ndarray, free_mask: np.ndarray, label: np.ndarray) -> dict:
    """Whether the inserted tumour changes the model's answer: the share of the tumour's voxels it marks, the
    share of the same voxels it marks in the same CT without the tumour (``free_mask``), and the Dice of the
    two masks. A model that answers to the anatomy and not to the tumour marks as much without it, and its
    two masks agree."""
    from amt_core.evaluation.segmentation import overlap_scores

    t = label > 0
    agree = overlap_scores(int(mask.sum()), int(free_mask.sum()), int((mask & free_mask).sum()))["dice"]
    return {
        "tumour_marked": float(mask[t].mean()),
        "tumour_marked_without": float(free_mask[t].mean()),
        "mask_agreement": float(agree),
    }


def insertion_rows(model: Path, n: int, context: bool = False) -> list[dict]:
    """``n`` tumours per bundled background, each inserted, written and predicted as a scan of its own; with
    ``context``, predicted again with the soft tissue around the tumour made lung and fat (:data:`CONTEXTS`)."""
    from amt_core.data.volume import read_volume
    from amt_core.synth.backgrounds import InsertionRejected, outline_composition
    from amt_core.synth.hybrid import bundled_backgrounds, hybrid_design, list_backgrounds, render_hybrid_case

    bgs = list_backgrounds(bundled_backgrounds())
    rows, tops, free = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(INSERTION_SEED, INSERTION_SEED + n):
            for row in hybrid_design(bgs, seed=seed, split="test", prefix="INS").to_dict("records"):
                path = bundled_backgrounds() / row["background"]
                out = {"seed": seed, "background": row["background"], "histology": row["histology"]}
                try:
                    image, label, affine, rec, _ = render_hybrid_case(row, str(path), seed)
                except InsertionRejected as exc:
                    rows.append({**out, "rejected": exc.reason})
                    continue
                spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
                name = f"s{seed}_{row['case_id']}"
                mask, prob = _predicted(model, image, affine, Path(tmp), name)
                out.update(tumour_ml=rec["volume_ml"], **outline_composition(image, label, spacing))
                if row["background"] not in tops:  # its top level, and its mask without a tumour (same grid)
                    bg = read_volume(path)
                    tops[row["background"]] = top_level(bg.array, spacing)
                    free[row["background"]] = _predicted(
                        model, np.asarray(bg.array, np.float32), bg.affine, Path(tmp), f"free_{name}"
                    )[0]
                out["below_top_mm"] = below_top_level_mm(tops[row["background"]], label, spacing)
                out.update(_scores(mask, prob, label, spacing))
                out.update(marked_without_tumour(mask, free[row["background"]], label))
                for kind, hu in CONTEXTS.items() if context else ():
                    changed = with_context(image, label, spacing, hu)
                    mask, prob = _predicted(model, changed, affine, Path(tmp), f"{name}_{kind}")
                    out.update({f"{kind}_{k}": v for k, v in _scores(mask, prob, label, spacing).items()})
                rows.append(out)
    return rows


def synthetic_border_composition(run: Path, limit: int = 60) -> pd.DataFrame:
    """The border composition (``outline_composition``) and level (:func:`below_top_level_mm`) of the run's
    synthetic test tumours (the first ``limit``), with their contrast phase, and those of its real-anatomy
    cases (their level read from the bundled background each went into)."""
    from amt_core.data.cases import read_cases
    from amt_core.data.volume import read_volume
    from amt_core.synth.backgrounds import outline_composition
    from amt_core.synth.hybrid import bundled_backgrounds

    cases = read_cases(run / "cohort" / "cases.csv")
    insertions = run / "cohort" / "insertions.csv"
    went_into = (
        dict(pd.read_csv(insertions, usecols=["case_id", "background"]).itertuples(index=False))
        if insertions.is_file()
        else {}
    )
    test = cases[cases["split"] == "test"]
    real = test[test["case_id"].str.startswith("REAL")]
    picked = pd.concat([test.drop(real.index).head(limit), real])
    is_real = picked.index.isin(real.index)
    rows = []
    for r, real_anatomy in zip(picked.itertuples(), is_real, strict=True):
        vol = read_volume(r.image)  # RAS+, as the insertion reads a background
        image, spacing = vol.array, vol.spacing
        label = read_volume(r.label).array > 0
        name = went_into.get(r.case_id)
        background = read_volume(bundled_backgrounds() / name).array if name else image
        rows.append(
            {
                "kind": "real anatomy" if real_anatomy else "synthetic",
                "contrast": r.contrast,
                **outline_composition(image, label, spacing),
                "below_top_mm": below_top_level_mm(top_level(background, spacing), label, spacing),
            }
        )
    return pd.DataFrame(rows)


def tumour_free_rows(model: Path, realdata: Path) -> list[dict]:
    import nibabel as nib

    from amt_core.model.inference import predict

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rel, what in VOLUMES.items():
            source = realdata / rel
            if not source.exists():
                continue
            out = predict(model, source, Path(tmp) / rel.replace("/", "_"), progress=False)
            case = json.loads((out / "predictions.json").read_text())["cases"]
            case_id = next(iter(case))
            # RAS voxel order (predict writes the input's own order), so axis 2 runs caudal to cranial
            mask_img = nib.as_closest_canonical(nib.load(out / f"{case_id}.nii.gz"))
            mask = np.asarray(mask_img.dataobj) > 0
            prob_img = nib.as_closest_canonical(nib.load(out / f"{case_id}_prob.nii.gz"))
            prob = np.asarray(prob_img.dataobj, dtype=np.float32)
            ml = float(np.prod(mask_img.header.get_zooms()[:3])) / 1000.0
            labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
            sizes = np.bincount(labels.ravel())[1:] * ml if n else np.zeros(0)
            candidates = pd.read_csv(out / f"{case_id}_candidates.csv")
            row = {
                "volume": rel,
                "shows": what,
                "shape": "x".join(str(s) for s in mask.shape),
                "fp_components": int(n),
                "fp_ml": float(sizes.sum()),
                "largest_ml": float(sizes.max()) if n else 0.0,
                "largest_max_prob": np.nan,
                "largest_z_frac": np.nan,
                "candidates_p50": int((candidates["confidence"] >= 0.5).sum()) if len(candidates) else 0,
            }
            if n:
                big = labels == (int(np.argmax(sizes)) + 1)
                row["largest_max_prob"] = float(prob[big].max())
                z = np.nonzero(big)[2]
                row["largest_z_frac"] = float(z.mean() / max(mask.shape[2] - 1, 1))
            rows.append(row)
    return rows


def insertion_markdown(ins: pd.DataFrame, syn: pd.DataFrame | None) -> list[str]:
    from amt_core.synth.backgrounds import FAT_HU, LUNG_HU, MIN_CONTRAST_HU

    n = len(ins)
    ok = ins[ins["rejected"].isna()] if "rejected" in ins.columns else ins
    if not len(ok):
        return [f"More insertions: all {n} were refused by the insertion's checks.", ""]
    lines = [
        f"More insertions (`--insertions {ins['seed'].nunique()}`): tumours of the study design's histology and "
        f"size (design seeds {ins['seed'].min()}-{ins['seed'].max()}) inserted into each of the "
        f"{ins['background'].nunique()} bundled backgrounds, each predicted as a scan: "
        f"**{int(ok['detected'].sum())} of {len(ok)} detected** (IoU >= 0.5), mean Dice {ok['dice'].mean():.3f}, "
        f"median of the tumour's maximum probability {ok['tumour_max_prob'].median():.2f}; "
        f"{n - len(ok)} insertions refused by the checks.",
        "",
        "| background | insertions | detected | mean Dice | median max prob in tumour | median border contrast "
        "| mean FP ml |",
        "|---|---|---|---|---|---|---|",
    ]
    for bg, g in ok.groupby("background"):
        lines.append(
            f"| `{bg}` | {len(g)} | {int(g['detected'].sum())} | {g['dice'].mean():.3f} | "
            f"{g['tumour_max_prob'].median():.2f} | {g['border_contrast'].median():.2f} | {g['fp_ml'].mean():.1f} |"
        )
    lines.append("")
    if "tumour_marked_without" in ok.columns:
        lines += [
            "Does the tumour change the answer? The share of each tumour's voxels the model marks, and of the same "
            "voxels in the same CT without the tumour; and how far the two masks agree (Dice). As much marked "
            "without the tumour, and masks that agree, say the model answers to the anatomy, not to the tumour.",
            "",
            "| background | tumour marked, mean | the same voxels without it, mean | mask agreement, median |",
            "|---|---|---|---|",
        ]
        for bg, g in list(ok.groupby("background")) + [("all", ok)]:
            lines.append(
                f"| {bg if bg == 'all' else f'`{bg}`'} | {g['tumour_marked'].mean():.2f} | "
                f"{g['tumour_marked_without'].mean():.2f} | {g['mask_agreement'].median():.2f} |"
            )
        lines.append("")
    if "lung_detected" in ok.columns:
        lines += [
            f"What the model needs around a tumour (`--context`): the soft tissue ({CONTEXT_SOFT_HU[0]:g} to "
            f"{CONTEXT_SOFT_HU[1]:g} HU) within {CONTEXT_MM:g} mm of each inserted tumour replaced by lung or fat, "
            "and the scan predicted again. AP offset: how far the mask beside the tumour lies from the tumour's "
            "centroid, front to back (negative: behind it).",
            "",
            "| surroundings | detected | mean Dice | median max prob in tumour | median AP offset mm (n) |",
            "|---|---|---|---|---|",
        ]
        for name, pre in [("as inserted", "")] + [
            (f"{k} ({hu:g} HU) within {CONTEXT_MM:g} mm", f"{k}_") for k, hu in CONTEXTS.items()
        ]:
            lines.append(
                f"| {name} | {int(ok[pre + 'detected'].sum())} of {len(ok)} | {ok[pre + 'dice'].mean():.3f} | "
                f"{ok[pre + 'tumour_max_prob'].median():.2f} | {_median_of(ok[pre + 'ap_offset_mm'])} |"
            )
        lines.append("")
    if syn is not None and len(syn):
        lines += [
            f"Border contrast (share of the outline that differs from the tumour by >= {MIN_CONTRAST_HU:g} HU), "
            f"median (10th percentile), and the mean share of the outline against lung (below {LUNG_HU:g} HU), "
            f"fat ({LUNG_HU:g} to {FAT_HU:g} HU) and tissue within {MIN_CONTRAST_HU:g} HU of the tumour; the level "
            "of the tumour's centre below the top of the insertion levels (the thoracic inlet as the insertion "
            "reads it), median (quartiles):",
            "",
            "| tumours | n | border contrast | lung | fat | like the tumour | centre below the top level, mm |",
            "|---|---|---|---|---|---|---|",
        ]
        groups = [
            ("synthetic, unenhanced", syn[(syn["kind"] == "synthetic") & (syn["contrast"] == "none")]),
            ("synthetic, enhanced", syn[(syn["kind"] == "synthetic") & (syn["contrast"] != "none")]),
            ("the run's real-anatomy cases", syn[syn["kind"] == "real anatomy"]),
            ("the insertions above", ok),
        ]
        for name, g in groups:
            if len(g):
                b = g["border_contrast"]
                lines.append(
                    f"| {name} | {len(g)} | {b.median():.2f} ({b.quantile(0.1):.2f}) | {g['lung'].mean():.2f} | "
                    f"{g['fat'].mean():.2f} | {g['like_tumour'].mean():.2f} | {_quartiles(g.get('below_top_mm'))} |"
                )
        lines.append("")
    return lines


def _median_of(values: pd.Series) -> str:
    """Median of the finite values with their number (a mask beside the tumour: not every insertion has one)."""
    v = values.dropna()
    return f"{v.median():+.1f} ({len(v)})" if len(v) else "–"


def _quartiles(values) -> str:
    """Median (25th-75th percentile) of the finite values, or a dash."""
    v = pd.Series([] if values is None else values, dtype=float).dropna()
    if not len(v):
        return "–"
    return f"{v.median():.0f} ({v.quantile(0.25):.0f}–{v.quantile(0.75):.0f})"


def markdown(
    run: Path, free: pd.DataFrame, ins: pd.DataFrame | None = None, syn=None, options: str = ""
) -> str:
    lines = [
        START,
        f"## Real CT behaviour of the demo model (`benchmarks/bench_real_ct.py --run {run}{options}`)",
        "",
    ]
    table = run / "tables" / "real_anatomy.csv"
    if table.is_file():
        ra = pd.read_csv(table)
        scans, total = ra.iloc[:-1], ra.iloc[-1]
        lines += [
            "Real-anatomy subset of the external test (tumours inserted into real chest CT of patients training "
            f"never saw; {len(scans)} scans of {scans['patient_id'].nunique()} patients): "
            f"{int(total['detected'])} of {int(total['lesions'])} tumours detected at the operating IoU, "
            f"mean Dice {total['dice']:.3f}, {total['fp']:.2f} false-positive candidates per scan; on the same "
            f"patients' CT without a tumour {total['tumour_free_fp']:.2f} false-positive components "
            f"({total['tumour_free_fp_ml']:.1f} ml) per scan.",
            "",
            "| scan | histology | tumour ml | Dice | detected | FP | tumour-free FP (ml) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in scans.to_dict("records"):
            lines.append(
                f"| {r['case_id']} | {r['histology']} | {r['tumour_volume_ml']:.1f} | {r['dice']:.3f} | "
                f"{int(r['detected'])}/{int(r['lesions'])} | {int(r['fp'])} | "
                f"{r['tumour_free_fp']:.0f} ({r['tumour_free_fp_ml']:.1f}) |"
            )
        lines.append("")
    if ins is not None and len(ins):
        lines += insertion_markdown(ins, syn)
    lines += [
        "Real tumour-free volumes of `../shared/realdata` (every marked component is a false positive; "
        "z fraction 0 = caudal end):",
        "",
        "| volume | shows | FP components | FP ml | largest ml | its max prob | its z fraction | candidates p>=0.5 |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def num(value: float) -> str:
        return "–" if pd.isna(value) else f"{value:.2f}"

    for r in free.to_dict("records"):
        lines.append(
            f"| `{r['volume']}` | {r['shows']} | {r['fp_components']} | {r['fp_ml']:.1f} | "
            f"{r['largest_ml']:.1f} | {num(r['largest_max_prob'])} | {num(r['largest_z_frac'])} | "
            f"{r['candidates_p50']} |"
        )
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"))
    ap.add_argument(
        "--realdata", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "realdata"
    )
    ap.add_argument("--results", type=Path, default=None, help="write the table into this Markdown file")
    ap.add_argument(
        "--insertions", type=int, default=0, help="insert this many more tumours into each bundled background"
    )
    ap.add_argument(
        "--context",
        action="store_true",
        help="with --insertions: predict each again with the tumour's surroundings made lung, then fat",
    )
    args = ap.parse_args(argv)
    if args.context and args.insertions <= 0:
        ap.error("--context needs --insertions N")
    model = args.run / "train" / "best.pt"
    if not model.is_file():
        ap.error(f"{model}: no trained model (run `make reproduce` first)")
    if not args.realdata.is_dir():
        ap.error(f"{args.realdata}: not a folder (the real volumes, ../shared/realdata)")
    free = pd.DataFrame(tumour_free_rows(model, args.realdata))
    ins = syn = None
    if args.insertions > 0:
        ins = pd.DataFrame(insertion_rows(model, args.insertions, context=args.context))
        syn = synthetic_border_composition(args.run)
    options = f" --insertions {args.insertions}" if args.insertions > 0 else ""
    text = markdown(args.run, free, ins, syn, options + (" --context" if args.context else ""))
    print(text)
    if args.results is not None:
        old = args.results.read_text() if args.results.is_file() else ""
        if START in old and END in old:
            new = old[: old.index(START)] + text.rstrip("\n") + old[old.index(END) + len(END) :]
        else:
            new = old.rstrip("\n") + "\n\n" + text
        from amt_core.atomic import write_text

        write_text(args.results, new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
