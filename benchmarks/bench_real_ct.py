"""How a trained demo model behaves on real CT (issue 15 §4): the run's real-anatomy subset (tumours inserted
into real chest CT of patients training never saw, from ``RUN/tables/real_anatomy.csv``) and the real,
tumour-free volumes of ``../shared/realdata``, where every component the model marks is a false positive.

    python benchmarks/bench_real_ct.py --run runs/demo [--realdata ../shared/realdata] [--results benchmarks/RESULTS.md]

For each real volume: the model's predicted mask (``amt predict``'s post-processed mask) split into
connected components (26-connectivity), their number and volume, the largest one's volume, maximum
probability and axial position (fraction of the scan from its caudal end: near 0 is the upper abdomen),
and how many candidates reach probability 0.5. With ``--results`` the Markdown table is written into that
file between ``<!-- real-ct:start -->`` and ``<!-- real-ct:end -->`` (added at the end when absent).
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


def markdown(run: Path, free: pd.DataFrame) -> str:
    lines = [
        START,
        f"## Real CT behaviour of the demo model (`benchmarks/bench_real_ct.py --run {run}`)",
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
    args = ap.parse_args(argv)
    model = args.run / "train" / "best.pt"
    if not model.is_file():
        ap.error(f"{model}: no trained model (run `make reproduce` first)")
    if not args.realdata.is_dir():
        ap.error(f"{args.realdata}: not a folder (the real volumes, ../shared/realdata)")
    free = pd.DataFrame(tumour_free_rows(model, args.realdata))
    text = markdown(args.run, free)
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
