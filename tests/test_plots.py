"""Manuscript figures and tables from small hand-made result tables (no model, no evaluation run)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amt_core.registry import FP_POINTS, IOU_SWEEP, PUBLISHED


@pytest.fixture
def per_case() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    dice = np.clip(rng.beta(8, 2, n), 0, 1)
    dice[:2] = [0.0, 0.3]
    vol = np.exp(rng.uniform(np.log(2), np.log(800), n))
    return pd.DataFrame({
        "case_id": [f"c{i:03d}" for i in range(n)], "institution_id": [f"I{i % 9:02d}" for i in range(n)],
        "split": np.where(np.arange(n) < 10, "tune", "test"), "dice": dice, "iou": dice / (2 - dice),
        "precision": np.clip(dice + 0.03, 0, 1), "recall": np.clip(dice - 0.02, 0, 1),
        "ref_volume_ml": vol, "pred_volume_ml": vol * np.exp(rng.normal(0, 0.2, n)) * (dice > 0),
        "tumour_volume_ml": vol, "slice_thickness_mm": rng.choice([0.625, 1.0, 2.5, 5.0], n),
    })  # fmt: skip


@pytest.fixture
def froc_tables():
    curves, bands = [], []
    for thr in (0.1, 0.3, 0.5):
        conf = np.linspace(1, 0.05, 30)
        fp, sens = 8 * (1 - conf) ** 2.5, np.clip(0.97 - 0.3 * thr - 0.25 * conf**3, 0, 1)
        curves.append(
            pd.DataFrame({"iou_threshold": thr, "threshold": conf, "fp_per_scan": fp, "sensitivity": sens})
        )
        for p in FP_POINTS:
            s = float(np.interp(p, fp, sens))
            bands.append(
                {
                    "iou_threshold": thr,
                    "point": f"{p:g}",
                    "fp_per_scan": p,
                    "sensitivity": s,
                    "ci_lo": s - 0.05,
                    "ci_hi": min(s + 0.05, 1.0),
                }
            )
    iou = pd.DataFrame(
        {
            "iou_threshold": list(IOU_SWEEP),
            "sensitivity": np.linspace(1, 0.2, len(IOU_SWEEP)),
            "fp_per_scan": np.linspace(0.3, 0.9, len(IOU_SWEEP)),
        }
    )
    return pd.concat(curves, ignore_index=True), pd.DataFrame(bands), iou


def _check_saved(paths, tmp_path, name):
    pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
    assert sorted(paths) == sorted([pdf, png])
    assert pdf.read_bytes().startswith(b"%PDF") and png.read_bytes().startswith(b"\x89PNG")
    from PIL import Image

    with Image.open(png) as im:
        dpi = im.info.get("dpi", (0, 0))[0]
        assert round(dpi) == 300, f"{name}.png is {dpi} dpi"
        assert im.size[0] >= 1000  # at least ~89 mm at 300 dpi
    assert not list(tmp_path.glob(".*tmp*")), "a temporary file was left behind"


def test_every_figure_saves_as_pdf_and_300dpi_png(tmp_path, per_case, froc_tables):
    from amt_core.plots import agreement, distributions, forest, froc, training
    from amt_core.plots.style import save_figure

    curves, bands, iou = froc_tables
    test = per_case[per_case["split"] == "test"]
    forest_table = pd.DataFrame(
        {
            "subgroup": ["sex", "sex", "vendor"],
            "level": ["M", "F", "GE"],
            "n": [10, 20, 0],
            "mean": [0.8, 0.7, np.nan],
            "ci_lo": [0.7, 0.6, np.nan],
            "ci_hi": [0.9, 0.8, np.nan],
        }
    )
    log = pd.DataFrame(
        {"epoch": [1, 2, 3, 4], "loss": [1.0, 0.8, 0.6, 0.5], "tune_dice": [np.nan, 0.4, np.nan, 0.6]}
    )
    figures = {
        "froc_confidence": froc.plot_froc_confidence(curves, bands),
        "froc_iou": froc.plot_froc_iou(iou),
        "metric_distributions": distributions.plot_metric_distributions(per_case),
        "volume_agreement": agreement.plot_volume_agreement(test, "ref_volume_ml", "pred_volume_ml")[0],
        "forest_subgroups": forest.plot_forest(forest_table, overall=0.75),
        "performance_vs_covariates": distributions.plot_performance_vs_covariates(test),
        "learning_curves": training.plot_learning_curves(log),
    }
    for name, fig in figures.items():
        _check_saved(save_figure(fig, tmp_path, name), tmp_path, name)


def test_saving_twice_gives_identical_bytes(tmp_path, froc_tables):
    from amt_core.plots.froc import plot_froc_iou
    from amt_core.plots.style import save_figure

    a = [p.read_bytes() for p in save_figure(plot_froc_iou(froc_tables[2]), tmp_path / "a", "f")]
    b = [p.read_bytes() for p in save_figure(plot_froc_iou(froc_tables[2]), tmp_path / "b", "f")]
    assert a == b


def test_style_does_not_leak_into_global_matplotlib_state(froc_tables):
    import matplotlib as mpl

    from amt_core.plots.froc import plot_froc_confidence

    before = dict(mpl.rcParams)
    plot_froc_confidence(*froc_tables[:2])
    assert dict(mpl.rcParams) == before


def test_palette_is_okabe_ito():
    from amt_core.plots.style import OKABE_ITO, PALETTE, ROLE

    assert set(PALETTE) <= set(OKABE_ITO.values())
    assert ROLE["reference"] != ROLE["prediction"]


def test_bland_altman_stats_on_known_values():
    from amt_core.plots.agreement import bland_altman_stats

    ref = np.array([10.0, 20.0, 40.0, 80.0])
    st = bland_altman_stats(ref, ref * 1.1, relative=False)
    assert st["bias"] == pytest.approx(np.mean(ref * 0.1))
    rel = bland_altman_stats(ref, ref * 1.1, relative=True)
    assert rel["bias"] == pytest.approx(100 * 0.1 / 1.05)
    assert rel["sd"] == pytest.approx(0.0, abs=1e-9)
    assert rel["loa_lo"] == pytest.approx(rel["loa_hi"])


def test_markdown_table_and_csv(tmp_path):
    from amt_core.plots.tables import to_markdown, write_table

    frame = pd.DataFrame({"metric": ["Dice", "IoU|x"], "mean": [0.81234, np.nan], "n": [164, 3]})
    md = to_markdown(frame, digits=2, title="T")
    assert md.splitlines()[0] == "**T**"
    assert "| metric | mean | n |" in md and "|---|---:|---:|" in md
    assert "| Dice | 0.81 | 164 |" in md and "IoU\\|x" in md and "| –" in md
    csv, mdp = write_table(frame, tmp_path, "t")
    assert pd.read_csv(csv)["mean"].iloc[0] == pytest.approx(0.81234)
    assert mdp.read_text().count("\n") == 4


def test_segmentation_table_puts_published_values_beside_ours():
    from amt_core.plots.tables import segmentation_markdown_frame, segmentation_table

    ci = pd.DataFrame(
        {
            "metric": ["dice", "iou", "precision", "recall"],
            "mean": [0.8, 0.7, 0.85, 0.8],
            "ci_lo": [0.75, 0.65, 0.8, 0.75],
            "ci_hi": [0.85, 0.75, 0.9, 0.85],
            "n": [164] * 4,
        }
    )
    table = segmentation_table(ci, ci.assign(ci_lo=ci["ci_lo"] - 0.01))
    assert list(table["published"]) == [PUBLISHED[m] for m in ("dice", "iou", "precision", "recall")]
    assert table["difference"].iloc[0] == pytest.approx(0.8 - 0.82)
    shown = segmentation_markdown_frame(table)
    assert shown["This run, mean (95% CI)"].iloc[0] == "0.800 (0.750–0.850)"
    assert "Institution-cluster 95% CI" in shown


def test_detection_table_reads_the_operating_points():
    from amt_core.plots.tables import detection_markdown_frame, detection_table

    iou = pd.DataFrame(
        {
            "iou_threshold": [0.1, 0.3, 0.5],
            "sensitivity": [0.95, 0.9, 0.85],
            "fp_per_scan": [0.3, 0.4, 0.6],
            "sensitivity_wilson_lo": [0.9, 0.85, 0.8],
            "sensitivity_wilson_hi": [0.98, 0.95, 0.9],
            "tp": [19, 18, 17],
            "n_lesions": [20] * 3,
        }
    )
    cpm = pd.DataFrame({"iou_threshold": [0.1, 0.3, 0.5], "cpm": [0.9, 0.85, 0.8]})
    table = detection_table(iou, cpm)
    last = table.iloc[-1]
    assert last["published_sensitivity"] == PUBLISHED["sensitivity_iou50"]
    assert last["sens_wilson_lo"] == 0.8 and last["cpm"] == 0.8 and last["tp"] == 17
    assert np.isnan(table.iloc[0]["published_sensitivity"])
    # a CPM partly held beyond the curve says so in its cell; a fully interpolated one is the bare value
    cpm["note"] = [
        "interpolated",
        "interpolated",
        "3 of 7 points held beyond the curve's last point (1 FP/scan)",
    ]
    shown = detection_markdown_frame(detection_table(iou, cpm))["CPM (reading A)"].tolist()
    assert shown == ["0.900", "0.850", "0.800 (3 of 7 points held beyond the curve's last point (1 FP/scan))"]


@pytest.mark.parametrize(
    "view, expected_shape", [("axial", (5, 6)), ("coronal", (4, 6)), ("sagittal", (4, 5))]
)
def test_view_slice_is_radiological(view, expected_shape):
    from amt_core.plots.viewing import view_slice

    vol = np.zeros((6, 5, 4))  # x (R+), y (A+), z (S+)
    vol[5, 4, 3] = 1  # the most right, anterior, superior voxel
    index = {"axial": 3, "coronal": 4, "sagittal": 5}[view]
    s = view_slice(vol, view, index)
    assert s.shape == expected_shape
    r, c = np.argwhere(s)[0]
    assert r == 0  # anterior (axial) or superior (coronal, sagittal) at the top
    assert c == 0  # patient's right (axial, coronal) / anterior (sagittal) on the viewer's left


def test_pick_examples_best_median_worst(per_case):
    from amt_core.plots.examples import pick_examples

    picks = pick_examples(per_case)
    assert picks["best"]["dice"] == per_case["dice"].max()
    assert picks["worst"]["dice"] == per_case["dice"].min()
    assert abs(picks["median"]["dice"] - per_case["dice"].median()) < 0.05


def test_every_figure_has_a_caption():
    from amt_core.plots import FIGURES, TABLES

    assert {
        "froc_confidence",
        "froc_iou",
        "metric_distributions",
        "volume_agreement",
        "forest_subgroups",
        "forest_institutions",
        "performance_vs_covariates",
        "examples",
        "calibration",
    } <= set(FIGURES)
    assert {"table1", "segmentation", "detection", "subgroups"} <= set(TABLES)


def test_figures_survive_a_model_that_finds_nothing(tmp_path, per_case):
    """An untrained model: every Dice 0, no predicted volume, no candidate, flat FROC curves."""
    from amt_core.plots import agreement, distributions, forest, froc
    from amt_core.plots.style import save_figure

    nothing = per_case.assign(dice=0.0, iou=0.0, precision=0.0, recall=0.0, pred_volume_ml=0.0)
    test = nothing[nothing["split"] == "test"]
    empty_curve = pd.DataFrame(
        {"iou_threshold": [0.1, 0.3, 0.5], "threshold": np.nan, "fp_per_scan": 0.0, "sensitivity": 0.0}
    )
    bands = pd.DataFrame(
        {
            "iou_threshold": 0.5,
            "fp_per_scan": list(FP_POINTS),
            "sensitivity": 0.0,
            "ci_lo": np.nan,
            "ci_hi": np.nan,
        }
    )
    iou = pd.DataFrame({"iou_threshold": list(IOU_SWEEP), "sensitivity": 0.0, "fp_per_scan": 0.0})
    one = pd.DataFrame(
        {"subgroup": ["sex"], "level": ["M"], "n": [1], "mean": [0.0], "ci_lo": [np.nan], "ci_hi": [np.nan]}
    )
    figures = [
        froc.plot_froc_confidence(empty_curve, bands),
        froc.plot_froc_iou(iou),
        distributions.plot_metric_distributions(nothing),
        distributions.plot_performance_vs_covariates(test),
        agreement.plot_volume_agreement(test, "ref_volume_ml", "pred_volume_ml")[0],
        forest.plot_forest(one, overall=0.0),
    ]
    for k, fig in enumerate(figures):
        assert all(p.stat().st_size > 0 for p in save_figure(fig, tmp_path, f"f{k}"))


def test_examples_are_three_different_scans_even_when_dice_ties():
    from amt_core.plots.examples import pick_examples

    tied = pd.DataFrame({"case_id": [f"c{i}" for i in range(7)], "dice": 0.0})
    picks = pick_examples(tied)
    assert len({p["case_id"] for p in picks.values()}) == 3


def test_froc_points_lie_on_the_drawn_curve():
    """The sensitivities the evaluation reports at 1/8..8 FP/scan sit on the plotted line, also where the
    curve's first operating point is beyond 1/8 FP/scan (the interpolated stretch from the origin)."""
    from amt_core.evaluation.froc import reading_a
    from amt_core.plots.froc import plot_froc_confidence

    rng = np.random.default_rng(3)
    n_scans, rows = 12, []
    for thr in (0.1, 0.5):
        for s in range(n_scans):
            for conf in rng.uniform(0.2, 1.0, 3):
                hit = rng.random() < (0.6 if thr == 0.1 else 0.35)
                rows.append(
                    {
                        "scan": s,
                        "iou_threshold": thr,
                        "confidence": conf,
                        "d_tp": int(hit),
                        "d_fp": int(not hit),
                    }
                )
    events = pd.DataFrame(rows)
    first = events.groupby("iou_threshold")["confidence"].idxmax()
    events.loc[first, ["d_tp", "d_fp"]] = [1, 2]  # each curve's first point is at 2/12 > 1/8 FP/scan
    curves, table = reading_a(events, np.ones(n_scans), (0.1, 0.5), FP_POINTS)
    fig = plot_froc_confidence(curves, table[table["point"] != "cpm"], iou_thresholds=(0.1, 0.5))
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    for thr in (0.1, 0.5):
        x, y = lines[f"IoU ≥ {thr:g}"].get_data()
        assert np.all(np.diff(y) >= -1e-12)  # a FROC curve never falls
        for p in FP_POINTS:
            want = table[(table["iou_threshold"] == thr) & (table["point"] == f"{p:g}")]["sensitivity"].item()
            assert y[np.flatnonzero(x == p)[0]] == pytest.approx(want, abs=1e-12)
    assert (table.query("point == '0.125'")["sensitivity"] > 0).all()


def test_examples_show_where_the_worst_scan_is_wrong(tmp_path):
    """A far false positive makes a scan the worst: the error row goes to its slice, the titles say why."""
    from amt_core.data.volume import write_volume
    from amt_core.plots.examples import plot_examples
    from amt_core.plots.viewing import error_slice

    shape, affine = (40, 40, 30), np.diag([1.0, 1.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    ref = np.zeros(shape, np.uint8)
    ref[14:26, 14:26, 12:20] = 1
    far_fp = ref.copy()
    far_fp[4:12, 28:36, 2:4] = 1  # a blob 16 slices below the tumour
    assert error_slice(ref, ref, 2) is None
    assert error_slice(ref > 0, far_fp > 0, 2) in (2, 3)
    (tmp_path / "pred").mkdir()
    rows, per_case = [], []
    for cid, pred, dice in (("good", ref, 1.0), ("mid", ref, 0.9), ("bad", far_fp, 0.6)):
        image = rng.normal(40, 10, shape).astype(np.float32)
        write_volume(image, affine, tmp_path / f"{cid}_img.nii.gz")
        write_volume(ref, affine, tmp_path / f"{cid}_ref.nii.gz")
        write_volume(pred, affine, tmp_path / "pred" / f"{cid}.nii.gz")
        rows.append(
            {
                "case_id": cid,
                "image": str(tmp_path / f"{cid}_img.nii.gz"),
                "label": str(tmp_path / f"{cid}_ref.nii.gz"),
            }
        )
        per_case.append(
            {"case_id": cid, "dice": dice, "precision": dice, "recall": 1.0, "fp": int(cid == "bad")}
        )
    fig = plot_examples(pd.DataFrame(per_case), pd.DataFrame(rows), tmp_path / "pred")
    axes = np.array(fig.axes).reshape(3, 3)
    assert "Worst: Dice 0.60 (bad)" in axes[0, 2].get_title() and "1 FP candidate" in axes[0, 2].get_title()
    labels = [[t.get_text() for t in ax.texts] for ax in axes[2]]
    assert labels[0] == ["no error"] and labels[2][0] in ("slice 2", "slice 3")


def test_cluster_interval_not_estimable_is_said_in_the_table_and_the_report(per_case, tmp_path):
    """A test split of 3 institutions: the cluster CI is NaN with its reason, and the manuscript table and
    report.md say 'not estimable' (never a '(point, point)' interval). The smoke run checks analyse()."""
    from amt_core.evaluation.bootstrap import bootstrap_means
    from amt_core.layout import RunLayout
    from amt_core.pipeline.report import build_report
    from amt_core.plots.tables import segmentation_markdown_frame, segmentation_table

    metrics = ["dice", "iou", "precision", "recall"]
    few = per_case.assign(institution_id=[f"I{i % 3}" for i in range(len(per_case))])
    cluster = bootstrap_means(
        few[metrics], n_bootstrap=200, seed=0, clusters=few["institution_id"].to_numpy()
    )
    scan = bootstrap_means(few[metrics], n_bootstrap=200, seed=0)
    shown = segmentation_markdown_frame(segmentation_table(scan, cluster))
    assert (shown["Institution-cluster 95% CI"] == "not estimable (3 institutions < 10)").all()
    assert shown["This run, mean (95% CI)"].str.match(r"0\.\d{3} \(0\.\d{3}–0\.\d{3}\)").all()

    layout = RunLayout.of(tmp_path / "run")
    layout.analysis_dir.mkdir(parents=True)
    (layout.analysis_dir / "comparison.csv").write_text(
        "metric,ours,ci_lo,ci_hi,published\ndice,0.8,0.75,0.85,0.82\n"
    )
    import json

    (layout.analysis_dir / "analysis.json").write_text(
        json.dumps(
            {
                "institution_cluster_bootstrap": {
                    "n_institutions": 3,
                    "min_institutions": 10,
                    "estimable": False,
                    "note": cluster["note"].iloc[0],
                }
            }
        )
    )
    report = build_report(layout.root)
    assert "**Institution-cluster bootstrap: not estimable: 3 institution(s), fewer than the 10" in report


def test_subgroup_markdown_prints_small_p_values_and_the_holm_value_beside_the_raw_one():
    from amt_core.evaluation.multiplicity import adjust_family
    from amt_core.plots.manuscript import _compact
    from amt_core.plots.tables import p_display

    rows = [
        {
            "subgroup": sg,
            "level": lev,
            "metric": "dice",
            "n": 5,
            "mean": 0.8,
            "ci_lo": 0.7,
            "ci_hi": 0.9,
            "test": "mann-whitney",
            "p_value": p,
        }
        for sg, p in (("sex", 0.00002), ("vendor", 0.2))
        for lev in "ab"
    ]
    table = adjust_family(pd.DataFrame(rows))
    shown = _compact(table, ["subgroup", "level"]).set_index("subgroup")
    assert shown.loc["sex", "p (Dice)"].tolist() == ["< 0.001", "< 0.001"]
    assert shown.loc["sex", "p (Holm, 2 tests)"].iloc[0] == "< 0.001"  # 2 * 0.00002
    assert (
        shown.loc["vendor", "p (Dice)"].iloc[0] == "0.200"
        and shown.loc["vendor", "p (Holm, 2 tests)"].iloc[0] == "0.200"
    )
    assert "0.000" not in p_display(table).to_string()


def test_learning_curves_name_a_log_without_its_columns():
    from amt_core.plots.training import plot_learning_curves

    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['loss'\]"):
        plot_learning_curves(pd.DataFrame({"epoch": [1], "train_loss": [1.0], "tune_dice": [0.5]}))


def test_every_subgroup_has_a_display_label_in_the_forest_plot():
    from amt_core import registry
    from amt_core.plots.forest import GROUP_LABELS

    missing = [s for s in registry.SUBGROUPS if s not in GROUP_LABELS]
    assert not missing, f"subgroups without a forest-plot header: {missing}"
    assert all(label[:1].isupper() for label in GROUP_LABELS.values())


def _legend_above_axes(fig, ax) -> None:
    """The axes' legend lies above the axes (so it covers none of their data, wherever the data fall) and
    inside the figure (not cut off on saving)."""
    fig.draw_without_rendering()
    box, area = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert box.y0 >= area.y1 - 0.5, (box, area)
    assert fig.bbox.x0 - 0.5 <= box.x0 and box.x1 <= fig.bbox.x1 + 0.5 and box.y1 <= fig.bbox.y1 + 0.5


def test_legends_cover_no_data(per_case, froc_tables):
    from amt_core.plots import distributions, froc

    curves, bands, iou = froc_tables
    flat = curves.assign(sensitivity=0.0)  # a subset that finds nothing: its curve runs along sensitivity 0
    fig = froc.plot_froc_confidence(curves, bands, subset=flat, subset_label="Real anatomy")
    ax = fig.axes[0]
    _legend_above_axes(fig, ax)
    assert ax.get_ylim()[0] < 0  # the all-zero curve is drawn clear of the x axis, not on it
    assert "Real anatomy" in [t.get_text() for t in ax.get_legend().get_texts()]
    # reading B: the published diamond (0.61 FP/scan, 0.87) sits top-centre, where "best" put the legend
    fig = froc.plot_froc_iou(iou)
    _legend_above_axes(fig, fig.axes[0])
    fig = distributions.plot_metric_distributions(per_case)
    _legend_above_axes(fig, fig.axes[0])


@pytest.mark.parametrize("lo, hi", [(40.0, 450.0), (60.0, 90.0), (150.0, 260.0), (0.5, 900.0)])
def test_bland_altman_volume_labels_do_not_run_together(lo, hi):
    from amt_core.plots.agreement import plot_volume_agreement

    ref = np.geomspace(lo, hi, 12)
    fig, _ = plot_volume_agreement(pd.DataFrame({"ref_volume_ml": ref, "pred_volume_ml": ref * 1.3}))
    bx = fig.axes[1]
    fig.draw_without_rendering()
    left, right = bx.get_xlim()
    ticks = [*bx.xaxis.get_major_ticks(), *bx.xaxis.get_minor_ticks()]
    shown = sorted(
        (t.label1.get_window_extent() for t in ticks if t.label1.get_visible() and t.label1.get_text()
         and left <= t.get_loc() <= right),
        key=lambda b: b.x0,
    )  # fmt: skip
    assert len(shown) >= 2, (lo, hi)  # the axis is read from at least two numbers
    gap = 4 / 72 * fig.dpi  # 4 pt of space between neighbours: "3×10²" and "4×10²" used to touch
    for a, b in zip(shown, shown[1:], strict=False):
        assert a.x1 + gap <= b.x0, (lo, hi, a, b)
    assert not any("times" in t.label1.get_text() for t in ticks)  # plain numbers, no "3×10²"


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_learning_curves_of_a_run_the_time_cap_stopped_before_any_evaluation():
    """One epoch, no tuning evaluation in the log, the stopgap Dice in training.json: integer epoch ticks, the
    stopgap drawn and named as the time cap's (no selection), and the legend says that nothing was selected."""
    from amt_core.plots.training import NO_SELECTION, plot_learning_curves

    log = pd.DataFrame({"epoch": [1], "loss": [1.19], "tune_dice": [np.nan]})
    status = {
        "complete": False,
        "stopped_by": "time cap",
        "epochs": 1,
        "best_tune_dice": 0.1807,
        "best_tune_dice_source": "time cap",
        "best_tune_dice_epoch": 1,
    }
    fig = plot_learning_curves(log, status)
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    shown = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert shown == [1.0]  # one whole epoch, not 0.945 ... 1.050
    texts = _legend_texts(fig)
    assert NO_SELECTION in texts
    assert "Kept by the time cap, not a selection (best.pt): Dice 0.181 at epoch 1" in texts
    assert not any(t.startswith("Selected") for t in texts)
    stopgap = [line for line in fig.axes[1].get_lines() if line.get_marker() == "D"]
    assert len(stopgap) == 1 and list(stopgap[0].get_ydata()) == [0.1807]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_learning_curves_mark_a_selection_and_no_stopgap_for_a_tuning_evaluation():
    from amt_core.plots.training import NO_SELECTION, plot_learning_curves

    log = pd.DataFrame({"epoch": [1, 2, 3], "loss": [1.0, 0.8, 0.7], "tune_dice": [np.nan, 0.4, np.nan]})
    status = {"best_tune_dice": 0.4, "best_tune_dice_source": "tuning evaluation", "best_tune_dice_epoch": 2}
    fig = plot_learning_curves(log, status)
    texts = _legend_texts(fig)
    assert "Selected (best.pt): Dice 0.400 at epoch 2" in texts
    assert NO_SELECTION not in texts and not any("time cap" in t for t in texts)
    ax = fig.axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    # a log without a tuning evaluation and no training.json (an older run): still says nothing was selected
    assert NO_SELECTION in _legend_texts(plot_learning_curves(log.assign(tune_dice=np.nan)))
    import matplotlib.pyplot as plt

    plt.close("all")
