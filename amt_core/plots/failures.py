"""Failure analysis of the external test: the worst scans by Dice, every missed lesion and the largest
false positives, as a table (size, axial slice, institution, scanner, contrast, slice thickness) and a
gallery of image crops; and the failures counted per sub-group.

Built from the evaluation's row tables (``per_case``, ``lesions``, ``candidates``; boxes in voxel
coordinates of the RAS+ volume, so ``z`` is the axial slice) and the case table.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from amt_core import registry

#: the kinds of failure, in the order the table and the gallery show them
KINDS: dict[str, str] = {
    "worst_scan": "worst scan",
    "missed_lesion": "missed lesion",
    "false_positive": "false positive",
}
#: case-table columns each failure is described by
DESCRIBE = ("institution_id", "vendor", "contrast", "slice_thickness_mm", "histology")


_BOX = ("x0", "x1", "y0", "y1", "z0", "z1")


def _box(frame: pd.DataFrame) -> dict | None:
    """The union box (voxel coordinates, stops exclusive) of the rows of ``frame``, None if empty."""
    if frame.empty:
        return None
    return {c: int(frame[c].min() if c.endswith("0") else frame[c].max()) for c in _BOX}


def failure_table(
    per_case: pd.DataFrame,
    lesions: pd.DataFrame,
    candidates: pd.DataFrame,
    cases: pd.DataFrame,
    *,
    n_worst: int = 5,
    n_fp: int = 5,
    metric: str = "dice",
) -> pd.DataFrame:
    """One row per failure: the ``n_worst`` scans by ``metric``, every missed reference lesion, and the
    ``n_fp`` largest false-positive candidates (status ``fp`` at the operating point).

    Columns: kind, case_id, item (lesion or candidate id; 0 for a scan), dice (of the scan), size_ml
    (reference volume for a scan, lesion or candidate volume otherwise), slices ("first–last" axial slice)
    and slice (the middle one), confidence and best_iou (candidates), :data:`DESCRIBE` from the case table,
    and the box (x0 ... z1, voxels, stops exclusive; a scan's is the union of its lesions').
    """
    dice = per_case.set_index("case_id")[metric]
    rows = []
    worst = per_case.dropna(subset=[metric]).sort_values([metric, "case_id"]).head(n_worst)
    for _, r in worst.iterrows():
        own = lesions[lesions["case_id"] == r["case_id"]]
        span = _box(own) or _box(candidates[candidates["case_id"] == r["case_id"]])
        rows.append(
            {
                "kind": "worst_scan",
                "case_id": r["case_id"],
                "item": 0,
                "size_ml": float(r.get("ref_volume_ml", own["volume_ml"].sum())),
                "span": span,
            }
        )
    missed = lesions[~lesions["hit"].astype(bool)].sort_values(
        ["volume_ml", "case_id"], ascending=[False, True]
    )
    for _, r in missed.iterrows():
        rows.append(
            {
                "kind": "missed_lesion",
                "case_id": r["case_id"],
                "item": int(r["lesion_id"]),
                "size_ml": float(r["volume_ml"]),
                "span": _box(r.to_frame().T),
                "best_iou": float(r["best_iou"]),
            }
        )
    fps = candidates[candidates["status"] == "fp"].sort_values(
        ["volume_ml", "case_id"], ascending=[False, True]
    )
    for _, r in fps.head(n_fp).iterrows():
        rows.append(
            {
                "kind": "false_positive",
                "case_id": r["case_id"],
                "item": int(r["candidate_id"]),
                "size_ml": float(r["volume_ml"]),
                "span": _box(r.to_frame().T),
                "confidence": float(r["confidence"]),
                "best_iou": float(r["best_iou"]),
            }
        )
    columns = [
        "kind",
        "case_id",
        "item",
        "dice",
        "size_ml",
        "slices",
        "slice",
        "confidence",
        "best_iou",
        *DESCRIBE,
        *_BOX,
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame(rows)
    out["dice"] = out["case_id"].map(dice)
    boxes = pd.DataFrame([s or dict.fromkeys(_BOX, -1) for s in out["span"]])
    out[list(_BOX)] = boxes.to_numpy()
    out["slices"] = [f"{s['z0']}–{s['z1'] - 1}" if s else "–" for s in out["span"]]
    out["slice"] = [(s["z0"] + s["z1"] - 1) // 2 if s else -1 for s in out["span"]]
    info = cases.drop_duplicates("case_id").set_index("case_id")
    for col in DESCRIBE:
        out[col] = out["case_id"].map(info[col]) if col in info.columns else np.nan
    return out.reindex(columns=columns).reset_index(drop=True)


def failure_counts(
    per_case: pd.DataFrame,
    lesions: pd.DataFrame,
    candidates: pd.DataFrame,
    cases: pd.DataFrame,
    *,
    n_worst: int = 5,
    metric: str = "dice",
    subgroups=tuple(registry.SUBGROUPS),
) -> pd.DataFrame:
    """Failures per sub-group level: scans, lesions, missed lesions (and the share missed), false-positive
    candidates (and per scan), and how many of the ``n_worst`` scans fall in the level."""
    from amt_core.evaluation.stats import merge_cases, present_subgroups, subgroup_levels

    columns = [registry.SUBGROUPS[s][0] for s in subgroups]
    scans = merge_cases(per_case[["case_id", metric]], cases, columns)
    subgroups = present_subgroups(scans, subgroups)  # e.g. no 'anatomy' column without a real-anatomy subset
    worst = set(per_case.dropna(subset=[metric]).sort_values([metric, "case_id"]).head(n_worst)["case_id"])
    missed = lesions.groupby("case_id")["hit"].apply(lambda h: int((~h.astype(bool)).sum()))
    n_les = lesions.groupby("case_id").size()
    fps = candidates[candidates["status"] == "fp"].groupby("case_id").size()
    scans["lesions"] = scans["case_id"].map(n_les).fillna(0).astype(int)
    scans["missed"] = scans["case_id"].map(missed).fillna(0).astype(int)
    scans["fp"] = scans["case_id"].map(fps).fillna(0).astype(int)
    scans["worst"] = scans["case_id"].isin(worst).astype(int)
    rows = []
    for name in subgroups:
        levels = subgroup_levels(scans, name)
        for lev in levels.cat.categories:
            part = scans[(levels == lev).to_numpy()]
            if part.empty:
                continue
            rows.append(
                {
                    "subgroup": name,
                    "level": str(lev),
                    "scans": len(part),
                    "lesions": int(part["lesions"].sum()),
                    "missed_lesions": int(part["missed"].sum()),
                    "missed_share": part["missed"].sum() / part["lesions"].sum()
                    if part["lesions"].sum()
                    else np.nan,
                    "false_positives": int(part["fp"].sum()),
                    "fp_per_scan": part["fp"].sum() / len(part),
                    f"worst_{n_worst}_scans": int(part["worst"].sum()),
                }
            )
    return pd.DataFrame(rows)


def failure_markdown_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The presentation form of :func:`failure_table` (panel numbers match the gallery)."""
    out = pd.DataFrame(
        {
            "#": range(1, len(table) + 1),
            "Failure": table["kind"].map(KINDS),
            "Case": table["case_id"],
            "Item": [
                f"{'lesion' if k == 'missed_lesion' else 'candidate'} {int(i)}" if i else "–"
                for k, i in zip(table["kind"], table["item"], strict=True)
            ],
        }
    )
    out["Scan Dice"] = table["dice"]
    out["Size (ml)"] = table["size_ml"]
    out["Axial slices"] = table["slices"]
    out["Confidence"] = table["confidence"]
    out["Institution"] = table["institution_id"]
    out["Vendor"] = table["vendor"]
    out["Contrast"] = table["contrast"]
    out["Slice (mm)"] = table["slice_thickness_mm"]
    return out


def gallery_rows(table: pd.DataFrame, max_panels: int = 12) -> list[int]:
    """The rows of :func:`failure_table` the gallery shows, in the table's order: the panel budget
    ``max_panels`` dealt out in turn to each kind present (worst scan, missed lesion, false positive), each
    kind giving its first rows (the worst scans, the largest misses and false positives) until it has none
    left, so every kind present is shown and no kind crowds the others out."""
    budget = max(0, int(max_panels))
    queues = [list(np.flatnonzero((table["kind"] == kind).to_numpy())) for kind in KINDS]
    queues = [q for q in queues if q]
    picked: list[int] = []
    while len(picked) < budget and queues:
        for q in list(queues):
            if len(picked) == budget:
                break
            picked.append(int(q.pop(0)))
            if not q:
                queues.remove(q)
    return sorted(picked)


def gallery_heading(table: pd.DataFrame, rows: list[int]) -> str:
    """How many failures the gallery shows of how many, in all and per kind (the figure's title)."""
    shown = table.iloc[rows]
    parts = [
        f"{(shown['kind'] == kind).sum()} of {n} {name}{'s' if n != 1 else ''}"
        for kind, name in KINDS.items()
        if (n := int((table["kind"] == kind).sum()))
    ]
    return f"{len(rows)} of {len(table)} failures shown ({', '.join(parts)}); # as in the failures table"


def plot_failures(
    table: pd.DataFrame,
    cases: pd.DataFrame,
    predictions_dir: str | Path,
    *,
    max_panels: int = 12,
    window: str = "mediastinum",
    margin_mm: float = 20.0,
    ncols: int = 4,
):
    """A gallery of up to ``max_panels`` failures of :func:`failure_table`, a share of each kind
    (:func:`gallery_rows`), titled with how many of how many are shown (:func:`gallery_heading`): the axial
    slice through the failure (the table's middle slice), cropped around its box (a scan's: its reference
    lesions), reference outline green, prediction orange, titled with its number in the table, kind, size
    and acquisition."""
    from matplotlib.lines import Line2D

    from amt_core.plots.style import ROLE, new_figure, plot_style
    from amt_core.plots.viewing import (
        apply_window,
        bare_axes,
        crop_box,
        draw_outlines,
        load_case,
        view_aspect,
        view_slice,
    )

    rows = gallery_rows(table, max_panels)
    shown = table.iloc[rows]
    nrows = max(1, math.ceil(len(shown) / ncols))
    info = cases.drop_duplicates("case_id").set_index("case_id")
    loaded: dict[str, tuple] = {}
    with plot_style():
        fig, axes = new_figure("double", aspect=0.27 * nrows + 0.06, nrows=nrows, ncols=ncols)
        for k, ax in enumerate(np.ravel(axes)):
            bare_axes(ax)
            if k >= len(shown):
                ax.set_visible(False)
                continue
            row = shown.iloc[k]
            cid = row["case_id"]
            if cid not in loaded:
                case = info.loc[cid].copy()
                case["case_id"] = cid
                loaded[cid] = load_case(case, Path(predictions_dir))
            image, ref, pred = loaded[cid]
            idx = int(row["slice"]) if row["slice"] >= 0 else image.shape[2] // 2
            rs, ps = view_slice(ref, "axial", idx), view_slice(pred, "axial", idx)
            box = crop_box(
                _box_mask(row, ref.shape), ps, int(round(margin_mm / float(min(image.spacing[:2]))))
            )
            box = _square(box, rs.shape, view_aspect(image.spacing, "axial"))
            img = apply_window(view_slice(image.array, "axial", idx), window)
            ax.imshow(
                img[box],
                cmap="gray",
                vmin=0,
                vmax=1,
                aspect=view_aspect(image.spacing, "axial"),
                interpolation="bilinear",
            )
            draw_outlines(ax, ((rs[box], ROLE["reference"]), (ps[box], ROLE["prediction"])), 0.8)
            ax.set_title(
                f"#{rows[k] + 1} {KINDS[row['kind']]}: {cid}\n{row['size_ml']:.1f} ml, slice {idx}, "
                f"Dice {row['dice']:.2f}",
                fontsize=5.5,
            )
            ax.text(
                0.02,
                0.03,
                f"{row['institution_id']} · {row['vendor']} · {row['contrast']} · "
                f"{row['slice_thickness_mm']:g} mm",
                color="white",
                fontsize=4.5,
                transform=ax.transAxes,
                va="bottom",
                bbox={"facecolor": "black", "alpha": 0.65, "linewidth": 0, "pad": 1.0},
            )
        handles = [
            Line2D([], [], color=ROLE["reference"], lw=1.2, label="Reference"),
            Line2D([], [], color=ROLE["prediction"], lw=1.2, label="Prediction"),
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=2)
        fig.suptitle(gallery_heading(table, rows), fontsize=6.5)
        # constrained layout sizes the rows before the images keep their aspect, which lifts the first row's
        # two-line titles past the top edge: keep a strip free above them
        fig.get_layout_engine().set(rect=(0.0, 0.0, 1.0, 0.975))
    return fig


def _square(box: tuple[slice, slice], shape: tuple[int, ...], aspect: float) -> tuple[slice, slice]:
    """``box`` (rows, columns) widened about its centre to a square on screen (rows drawn ``aspect`` times as
    tall as columns are wide), within the slice ``shape``: every panel of the gallery has the same shape, so
    the titles of a row line up and none is pushed out of the figure by a tall crop."""
    (rows, cols), (h, w) = box, shape[:2]
    r0, r1 = rows.indices(h)[:2]
    c0, c1 = cols.indices(w)[:2]
    height, width = (r1 - r0) * aspect, float(c1 - c0)
    if height < width:
        r0, r1 = _widen(r0, r1, int(round(width / aspect)), h)
    elif width < height:
        c0, c1 = _widen(c0, c1, int(round(height)), w)
    return slice(r0, r1), slice(c0, c1)


def _widen(start: int, stop: int, size: int, limit: int) -> tuple[int, int]:
    """``[start, stop)`` grown about its centre to ``size`` (at most ``limit``), shifted to stay in [0, limit)."""
    size = min(max(size, stop - start), limit)
    start = max(0, min((start + stop - size) // 2, limit - size))
    return start, start + size


def _box_mask(row: pd.Series, shape: tuple[int, ...]) -> np.ndarray:
    """The failure's in-plane box as a 2D axial display mask (all False without a box)."""
    from amt_core.plots.viewing import view_slice

    mask = np.zeros((*shape[:2], 1), dtype=bool)
    if int(row["x0"]) >= 0:
        mask[int(row["x0"]) : int(row["x1"]), int(row["y0"]) : int(row["y1"])] = True
    return view_slice(mask, "axial", 0)
