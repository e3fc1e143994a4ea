"""Is the synthetic chest CT realistic enough? Compared with the real thoracic CT in
../shared/realdata/cip_thorax_lowres (see its SOURCES.md), and the tumour must not be a threshold away."""

from __future__ import annotations

import numpy as np
import pytest

from amt_core.synth.design import study_design
from amt_core.synth.generate import render_case

PCTS = (5, 25, 50, 75, 95, 99)


def _pick(design):
    """A spread of cases: each contrast phase and the histologies that look most different."""
    wanted = [
        ("none", "thymoma_A"),
        ("venous", "thymoma_B2"),
        ("arterial", None),
        ("venous", "thymic_cyst"),
        ("none", "lymphoma"),
        ("venous", "thymic_carcinoma"),
        ("none", "germ_cell_tumour"),
    ]
    rows = []
    for contrast, hist in wanted:
        sel = design[design.contrast == contrast]
        if hist is not None:
            sel = sel[sel.histology == hist]
        rows.append(sel.iloc[0].to_dict())
    return rows


@pytest.fixture(scope="module")
def cases():
    design = study_design()
    out = []
    for row in _pick(design):
        details: dict = {}
        image, label, affine = render_case(row, "demo", seed=0, details=details)
        out.append((row, image.astype(np.float32), label, affine, details))
    return out


@pytest.fixture(scope="module")
def real(realdata):
    import nibabel as nib

    folder = realdata / "cip_thorax_lowres"
    ct = nib.as_closest_canonical(nib.load(folder / "ct.nii.gz"))
    arr = np.asarray(ct.dataobj, dtype=np.float32)
    lungs = np.asarray(nib.as_closest_canonical(nib.load(folder / "lung_lr_airway_derived.nii.gz")).dataobj)
    ct2 = np.asarray(nib.load(folder / "ct2_testinput.nii.gz").dataobj, dtype=np.float32)
    return arr, lungs, ct2


def _lung_fraction(a):
    return float(((a > -950) & (a < -700)).mean())


@pytest.mark.realdata
def test_whole_scan_hu_distribution_is_within_the_range_of_real_ct(cases, real):
    arr, _, ct2 = real
    real_lf = _lung_fraction(arr)
    assert real_lf == pytest.approx(0.257, abs=0.005)  # SOURCES.md
    real_p = np.percentile(arr, PCTS)
    lo_p = np.minimum(real_p, np.percentile(ct2, PCTS))
    hi_p = np.maximum(real_p, np.percentile(ct2, PCTS))
    # tolerance per percentile (HU): field of view, patient habitus and contrast legitimately move them
    tol = np.array([40, 120, 450, 120, 200, 350])
    fractions = []
    for row, image, *_ in cases:
        lf = _lung_fraction(image)
        fractions.append(lf)
        assert 0.08 <= lf <= 0.40, f"{row['case_id']}: lung fraction {lf:.3f}"
        p = np.percentile(image, PCTS)
        bad = [
            (q, round(v), (round(lo - t), round(hi + t)))
            for q, v, lo, hi, t in zip(PCTS, p, lo_p, hi_p, tol, strict=True)
            if not lo - t <= v <= hi + t
        ]
        assert not bad, f"{row['case_id']} ({row['contrast']}): percentiles outside the real range: {bad}"
    assert 0.12 <= float(np.median(fractions)) <= 0.35


@pytest.mark.realdata
def test_tissue_hu_of_the_synthetic_organs(cases, real):
    arr, lungs, _ = real
    real_lung = float(np.median(arr[(lungs == 1) | (lungs == 2)]))
    for row, image, _, _, det in cases:
        m = det["masks"]
        med = {k: float(np.median(image[v])) for k, v in m.items() if v.any()}
        cid = f"{row['case_id']} ({row['contrast']})"
        assert abs(med["lung"] - real_lung) < 80, (cid, med["lung"], real_lung)
        assert -920 < med["lung"] < -760, (cid, med)
        assert -160 < med["fat"] < -50, (cid, med)
        assert 10 < med["muscle"] < 90, (cid, med)
        assert float(np.percentile(image[m["bone"]], 95)) > 300, cid
        assert 100 < med["bone"] < 450, (cid, med)  # cancellous vertebral bone
        if row["contrast"] == "none":
            assert 15 < med["heart"] < 75, (cid, med)  # unenhanced blood and myocardium
        else:
            assert med["heart"] > 70, (cid, med)


def test_tumour_is_prevascular_behind_the_sternum_in_front_of_heart_and_aorta(cases):
    for row, _, label, affine, det in cases:
        p = det["patient"]
        assert label.any()
        ijk = np.argwhere(label > 0)
        xyz = ijk * np.diag(affine)[:3] + affine[:3, 3]
        centroid = xyz.mean(0)
        assert centroid[1] > p.heart_c[1], f"{row['case_id']}: tumour not anterior to the heart"
        asc_aorta = det["aorta"][:3].mean(0)  # first points: aortic root and ascending aorta
        assert centroid[1] > asc_aorta[1], f"{row['case_id']}: tumour not anterior to the ascending aorta"
        sternum_y = p.y_front + 7.0 * p.s
        assert xyz[:, 1].max() < sternum_y, f"{row['case_id']}: tumour reaches into the sternum"
        assert abs(centroid[0] - p.cx) < 0.5 * p.cav_a, f"{row['case_id']}: tumour not mediastinal"
        # primary lesion within the thorax, above the diaphragm and below the lung apices
        assert p.z_dome_r - 20 < centroid[2] < p.z_apex


def _best_window_dice(image, label, lo=-300, hi=600, step=5):
    """Best Dice over every HU window [a, b] on a grid (histogram trick: all windows at once)."""
    edges = np.arange(lo, hi + step, step, dtype=float)
    t = label > 0
    ht, _ = np.histogram(image[t], edges)
    ha, _ = np.histogram(image, edges)
    ct, ca = np.concatenate([[0], np.cumsum(ht)]), np.concatenate([[0], np.cumsum(ha)])
    tp = ct[None, :] - ct[:, None]  # window from edge i to edge j
    pp = ca[None, :] - ca[:, None]
    dice = 2.0 * np.clip(tp, 0, None) / np.maximum(pp + t.sum(), 1)
    return float(dice.max())


def test_thresholding_hu_cannot_segment_the_tumour(cases):
    for row, image, label, *_ in cases:
        best = _best_window_dice(image, label)
        assert best < 0.5, (
            f"{row['case_id']} ({row['histology']}, {row['contrast']}): threshold Dice {best:.2f}"
        )


def test_tumour_hu_overlaps_other_soft_tissue(cases):
    for row, image, label, _, det in cases:
        if row["histology"] == "thymic_cyst":
            continue
        tum = image[label > 0]
        mus = image[det["masks"]["muscle"]]
        q_t = np.percentile(tum, [25, 75])
        q_m = np.percentile(mus, [10, 90])
        assert q_t[0] < q_m[1] and q_m[0] < q_t[1], (row["case_id"], q_t, q_m)


def test_preview_panel_renders(cases, tmp_path):
    from synth_preview import render_panel

    row, image, label, affine, _ = cases[0]
    out = render_panel([(row["case_id"], image, label, np.diag(affine)[:3])], tmp_path / "p.png")
    assert out.stat().st_size > 10_000
