"""Is the synthetic chest CT realistic enough? Compared with the real chest CTs in ../shared/realdata
(cip_thorax_lowres and the four chest_backgrounds, see its SOURCES.md), measured the same way on both:
whole-scan and tissue HU, noise texture per reconstruction kernel, lung parenchyma and vessels, bone;
and the tumour must not be a threshold away."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from amt_core.synth.design import study_design
from amt_core.synth.generate import render_case

PCTS = (5, 25, 50, 75, 95, 99)


def _pick(design):
    """A spread of cases: each contrast phase and the histologies that look most different."""
    wanted = [
        ("none", "thymoma_A", None),
        ("venous", "thymoma_B2", None),
        ("arterial", None, None),
        ("venous", "thymic_cyst", None),
        ("none", "lymphoma", None),
        ("venous", "thymic_carcinoma", None),
        ("none", "germ_cell_tumour", None),
        ("none", None, "soft"),  # each reconstruction kernel family, for the noise texture
        ("venous", None, "lung"),
    ]
    rows = []
    for contrast, hist, kernel in wanted:
        sel = design[design.contrast == contrast]
        if hist is not None:
            sel = sel[sel.histology == hist]
        if kernel is not None:
            sel = sel[sel.kernel == kernel]
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


#: the four chest_backgrounds by reconstruction-kernel family (SOURCES.md: Philips L, Siemens B70f; GE SOFT,
#: Siemens B10f)
KERNEL_FAMILY = {
    "lung_dx_a0001": "sharp",
    "lung_dx_a0002": "sharp",
    "acrin_flt_breast_001": "soft",
    "acrin_flt_breast_013": "soft",
}
SYNTH_FAMILY = {"soft": "soft", "sharp": "sharp", "lung": "sharp"}  # "standard" lies between the two


@pytest.fixture(scope="module")
def chest_ct(realdata):
    """The real chest CTs (RAS float32 HU): the four chest_backgrounds and the two CIP thoraces."""
    import nibabel as nib

    paths = sorted((realdata / "chest_backgrounds").glob("*.nii.gz"))
    paths += [realdata / "cip_thorax_lowres" / f for f in ("ct.nii.gz", "ct2_testinput.nii.gz")]
    out = {}
    for path in paths:
        img = nib.as_closest_canonical(nib.load(path))
        out[path.name.removesuffix(".nii.gz")] = np.asarray(img.dataobj, dtype=np.float32)
    assert set(KERNEL_FAMILY) <= set(out), sorted(out)
    return out


def noise_texture(image: np.ndarray, size: int = 8, step: int = 4) -> dict:
    """Noise texture in uniform fat and soft tissue: in-plane patches of ``size`` pixels whose smoothed HU
    lie wholly in -150..-60 or 10..90, each detrended (a fitted plane removed). Returns the noise sd (HU),
    the median lag-1 autocorrelation of neighbouring pixels (negative: fine-grained, as a sharp kernel's
    ramp-shaped noise power spectrum gives; positive: blotchy) and the radially averaged noise power
    spectrum (bins 0 .. Nyquist, peak 1) with its peak frequency as a fraction of the Nyquist frequency."""
    from numpy.lib.stride_tricks import sliding_window_view

    img = image.astype(np.float32)
    smooth = ndimage.gaussian_filter(img, (1.5, 1.5, 0.0))
    win = sliding_window_view(smooth, (size, size), axis=(0, 1))[::step, ::step]
    lo, hi = win.min(axis=(-2, -1)), win.max(axis=(-2, -1))
    ok = ((lo > -150) & (hi < -60)) | ((lo > 10) & (hi < 90))
    patches = sliding_window_view(img, (size, size), axis=(0, 1))[::step, ::step][ok]
    patches = patches.reshape(len(patches), size * size).astype(np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    design = np.c_[np.ones(size * size), xx.ravel(), yy.ravel()]
    patches = patches - patches @ (design @ np.linalg.pinv(design)).T  # detrended
    var = patches.var(axis=1)
    keep = var > 0
    patches, var = patches[keep].reshape(-1, size, size), var[keep]
    lag = 0.5 * (
        (patches[:, 1:] * patches[:, :-1]).mean((1, 2))
        + (patches[:, :, 1:] * patches[:, :, :-1]).mean((1, 2))
    )
    power = (np.abs(np.fft.fft2(patches)) ** 2).mean(0)
    f = np.fft.fftfreq(size)
    ring = np.rint(np.hypot(*np.meshgrid(f, f, indexing="ij")) * size).astype(int)
    nps = np.bincount(ring.ravel(), power.ravel()) / np.bincount(ring.ravel())
    nps = nps[: size // 2 + 1] / nps[: size // 2 + 1].max()
    return {
        "n": len(var),
        "sd": float(np.sqrt(np.median(var))),
        "rho1": float(np.median(lag / var)),
        "nps": nps,
        "peak": float(np.argmax(nps) / (size // 2)),
    }


def lung_mask(image: np.ndarray) -> np.ndarray:
    """The lungs as a reader outlines them: air-like (< -400 HU) regions inside the body (not touching the
    in-plane border: outside air), holes filled slice by slice (vessels are lung), one voxel eroded."""
    air = image < -400
    lab, n = ndimage.label(air)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes > 0.002 * image.size
    keep[0] = False
    keep[np.unique(np.r_[lab[0].ravel(), lab[-1].ravel(), lab[:, 0].ravel(), lab[:, -1].ravel()])] = False
    mask = ndimage.binary_closing(keep[lab], np.ones((3, 3, 1), bool))
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return ndimage.binary_erosion(mask, np.ones((3, 3, 1), bool))


def lung_stats(image: np.ndarray) -> dict:
    """HU percentiles (5, 50, 95) of the lungs and the fraction of lung voxels above -500 HU (vessels)."""
    v = image[lung_mask(image)]
    return {"pct": np.percentile(v, (5, 50, 95)), "vessels": float((v > -500).mean())}


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


@pytest.mark.realdata
def test_noise_texture_per_kernel_is_that_of_real_ct(cases, chest_ct):
    """Noise autocorrelation and power spectrum, measured alike in uniform tissue of real and synthetic
    scans. Real sharp kernels give fine-grained noise (negative neighbour correlation, NPS highest at the
    Nyquist frequency), real soft kernels blotchy noise (positive correlation, NPS falling off). Every
    synthetic scan's correlation and NPS peak lie within the real range, and the synthetic kernels are
    ordered as the real ones: sharp fine-grained, soft blotchier than any sharp one, with less power at
    high frequencies; the noise sd of each family within a factor 2 of the real scans of that family."""
    real = {name: noise_texture(chest_ct[name]) for name in KERNEL_FAMILY}
    fam = {f: [real[n] for n in KERNEL_FAMILY if KERNEL_FAMILY[n] == f] for f in ("sharp", "soft")}
    assert all(t["rho1"] < -0.05 and t["nps"][-1] >= 0.75 for t in fam["sharp"]), real  # the yardstick
    assert all(t["rho1"] > 0.15 and t["nps"][-1] <= 0.25 for t in fam["soft"]), real
    rho = [t["rho1"] for t in real.values()]
    peaks = [t["peak"] for t in real.values()]
    synth: dict[str, list] = {"sharp": [], "soft": []}
    for row, image, *_ in cases:
        t = noise_texture(image)
        cid = f"{row['case_id']} ({row['kernel']} kernel)"
        assert t["n"] > 200, cid
        assert min(rho) - 0.1 <= t["rho1"] <= max(rho) + 0.1, (cid, t, real)
        assert min(peaks) <= t["peak"] <= max(peaks), (cid, t, real)
        family = SYNTH_FAMILY.get(row["kernel"])
        if family:
            synth[family].append(t)
            lo = min(r["sd"] for r in fam[family]) / 2.0
            hi = max(r["sd"] for r in fam[family]) * 2.0
            assert lo <= t["sd"] <= hi, (cid, "noise sd", t["sd"], (lo, hi))
    assert synth["sharp"] and synth["soft"]
    # per family (a single scan's uniform patches also hold anatomy and artefacts: streaks, edges)
    rho_sharp = float(np.mean([t["rho1"] for t in synth["sharp"]]))
    assert rho_sharp < 0.0, synth["sharp"]
    assert all(t["rho1"] > max(rho_sharp, 0.0) for t in synth["soft"]), synth
    hf_sharp = np.mean([t["nps"][-1] for t in synth["sharp"]])
    assert all(t["nps"][-1] < hf_sharp for t in synth["soft"]), synth


@pytest.mark.realdata
def test_lung_parenchyma_and_vessels_are_within_the_range_of_real_ct(cases, chest_ct):
    """Lung HU percentiles 5/50/95 (parenchyma, its gradient and the vessel tree) and the fraction of lung
    voxels above -500 HU (vessels) lie within the range of the six real chest CTs, measured alike."""
    real = [lung_stats(a) for a in chest_ct.values()]
    pct = np.array([r["pct"] for r in real])
    ves = [r["vessels"] for r in real]
    lo, hi = pct.min(0) - np.array([20, 25, 60]), pct.max(0) + np.array([20, 25, 60])
    for row, image, *_ in cases:
        st = lung_stats(image)
        cid = f"{row['case_id']} ({row['contrast']})"
        assert ((lo <= st["pct"]) & (st["pct"] <= hi)).all(), (cid, st["pct"].round(), lo, hi)
        assert 0.8 * min(ves) <= st["vessels"] <= 1.25 * max(ves), (cid, st["vessels"], min(ves), max(ves))


@pytest.mark.realdata
def test_bone_hu_is_within_the_range_of_real_ct(cases, chest_ct):
    """Percentiles 50/95/99 of the voxels above 200 HU (bone: cortex and marrow at the scan's partial
    volume) of unenhanced synthetic scans lie within the range of the real chest CTs (all unenhanced)."""
    real = np.array([np.percentile(a[a > 200], (50, 95, 99)) for a in chest_ct.values()])
    lo, hi = real.min(0) - np.array([30, 60, 100]), real.max(0) + np.array([30, 60, 100])
    checked = 0
    for row, image, *_ in cases:
        if row["contrast"] != "none":  # contrast-filled vessels above 200 HU are not bone
            continue
        q = np.percentile(image[image > 200], (50, 95, 99))
        assert ((lo <= q) & (q <= hi)).all(), (row["case_id"], q.round(), lo.round(), hi.round())
        checked += 1
    assert checked >= 3


def test_organ_hu_vary_between_patients_as_in_real_populations():
    """Unenhanced blood follows the haematocrit (about 42 +- 5 HU), a quarter of livers are fatty (below 42
    HU, the rest about 57), and each contrast phase adds the same increment on top of the patient's own HU."""
    from amt_core.synth.anatomy import STEATOSIS, TISSUE_HU, tissue_table

    tables = [tissue_table("none", 1.0, 50.0, np.random.default_rng(i)) for i in range(400)]
    blood = np.array([t["aorta"] for t in tables])
    liver = np.array([t["liver"] for t in tables])
    assert 3.0 < blood.std() < 7.0 and 38.0 < blood.mean() < 46.0, (blood.mean(), blood.std())
    assert all(t["aorta"] == t["heart_left"] == t["vein"] for t in tables)  # one blood pool
    fatty = (liver < 43.0).mean()
    assert abs(fatty - STEATOSIS) < 0.07, fatty
    assert liver.std() > 10.0 and 52.0 < np.median(liver[liver >= 43.0]) < 62.0
    for i in range(5):  # the same patient (same draws) in the venous phase: the table's increment on top
        plain = tissue_table("none", 0.8, 50.0, np.random.default_rng(i))
        venous = tissue_table("venous", 0.8, 50.0, np.random.default_rng(i))
        for name in ("liver", "aorta", "spleen"):
            step = 0.8 * (TISSUE_HU[name][1] - TISSUE_HU[name][0])
            assert venous[name] - plain[name] == pytest.approx(step), name


def test_upper_abdomen_fills_the_scan_below_the_domes():
    """A scan reaching well into the abdomen: on its lowest slice the liver fills most of the right half
    of the abdomen and the lungs are only their posterior recesses, small beside their widest slice."""
    import nibabel as nib

    design = study_design(n_cases=40, seed=0)
    for row in design.to_dict("records"):
        details: dict = {}
        image, _, affine = render_case(row, "demo", seed=0, details=details)
        if details["patient"].extras["abdomen_mm"] >= 60.0 and row["contrast"] == "none":
            break
    else:
        pytest.fail("no unenhanced case reaching 60 mm below the domes among the first 40")
    p, hu = details["patient"], details["hu"]
    img = nib.as_closest_canonical(nib.Nifti1Image(image.astype(np.float32), affine))
    a = ndimage.uniform_filter(np.asarray(img.dataobj, np.float32), (3, 3, 1))
    x = img.affine[0, 0] * np.arange(a.shape[0]) + img.affine[0, 3]
    y = img.affine[1, 1] * np.arange(a.shape[1]) + img.affine[1, 3]
    X, Y = np.meshgrid(x, y, indexing="ij")
    right = ((X - p.cx) / p.cav_a) ** 2 + ((Y - p.cy) / p.cav_b) ** 2 < 0.8
    right &= X > p.cx + 0.15 * p.cav_a
    low = a[:, :, 0]
    liver = np.abs(low - hu["liver"]) < 25.0
    assert liver[right].mean() > 0.6, (row["case_id"], liver[right].mean())
    lung = a < -400
    body = ((X - p.cx) / (p.cav_a + p.wall)) ** 2 + ((Y - p.cy) / (p.cav_b + p.wall)) ** 2 < 1.0
    area = (lung & body[:, :, None]).sum((0, 1))
    assert area[0] < 0.2 * area.max(), (area[0], area.max())
    if area[0]:
        assert Y[lung[:, :, 0] & body].mean() < p.cy, "the lungs below the domes are their posterior recesses"


def test_heart_rests_on_the_diaphragm_with_no_lung_between(cases):
    """As in real chest CT: the heart's lowest part lies on the diaphragm, and the column of voxels under it
    is soft tissue (diaphragm, then liver), not lung. Its width is that of adults' hearts: a
    cardiothoracic ratio (widest heart over widest inner chest, axial) between 0.38 and 0.52."""
    from amt_core.synth.anatomy import diaphragm_z

    for row, image, _, affine, details in cases:
        p, heart, lung = details["patient"], details["masks"]["heart"], details["masks"]["lung"]
        spacing = np.abs(np.diag(affine)[:3])
        assert affine[2, 2] > 0, "test assumes z increasing with the slice index"
        ijk = np.argwhere(heart)
        low = ijk[ijk[:, 2] <= ijk[:, 2].min() + 1]
        xyz = (affine @ np.c_[low, np.ones(len(low))].T)[:3].T
        gap = xyz[:, 2] - diaphragm_z(p, xyz[:, 0].astype(np.float32), xyz[:, 1].astype(np.float32))
        assert np.median(gap) < 3.0 * spacing[2], (row["case_id"], "heart floats above the diaphragm", gap)
        below = max(1, int(round(6.0 / spacing[2])))  # 6 mm under the heart's lowest voxels
        for i, j, k in low[:: max(1, len(low) // 25)]:
            column = image[i, j, max(0, k - below) : k]
            assert column.size == 0 or column.min() > -300, (row["case_id"], "lung under the heart", column)
        width = [np.ptp(np.nonzero(m.any(1))[0]) + 1 for m in heart.transpose(2, 0, 1) if m.any()]
        chest = [np.ptp(np.nonzero(m.any(1))[0]) + 1 for m in lung.transpose(2, 0, 1) if m.sum() > 50]
        assert 0.38 < max(width) / max(chest) < 0.52, (row["case_id"], max(width), max(chest))


def test_primary_masses_cover_the_thymic_bed_down_over_the_heart():
    """Tumours are inserted into real CT at the levels from the aortic arch down over the upper heart
    (``backgrounds.LEVELS_MM``); the synthetic primaries cover the same thymic bed: their levels spread
    (standard deviation above 8% of the chest's height; 6% before GENERATOR_VERSION 4), a share of them is
    centred at the level of the heart's base or below it, in front of the pericardium (where, unenhanced,
    nothing but shape tells them from the heart; 1 of these 16 before, 4 now), more reach down to it, and
    none lies above the lung apices or on the diaphragm."""
    from amt_core.synth.canvas import ellipsoid_box

    design = study_design(n_cases=16, seed=0)
    reach, level, centre = [], [], []
    for row in design.to_dict("records"):
        details: dict = {}
        render_case(row, "demo", seed=0, details=details)
        p, lesion = details["patient"], details["lesions"][0]
        base = float(ellipsoid_box(p.heart_c, p.heart_r, p.heart_rot)[1][2])  # the heart's top
        low = float(ellipsoid_box(lesion.center, lesion.radii, lesion.rot)[0][2])
        reach.append(low < base)
        level.append(lesion.center[2] < base + 15.0)
        centre.append((lesion.center[2] - p.z_dome_r) / (p.z_apex - p.z_dome_r))
    assert np.std(centre) > 0.08, np.round(centre, 2)
    assert np.mean(level) >= 0.15, level
    assert 0.3 <= np.mean(reach) <= 0.9, reach
    assert 0.2 < min(centre) and max(centre) < 0.85, np.round(centre, 2)
