"""The study design of the synthetic cohort: who is in it, where they were scanned, and how.

``study_design()`` returns one row per case: the case-table columns of
:data:`amt_core.registry.CASE_COLUMNS` (image/label as nnU-Net-layout paths relative to the table) plus
the scanner profile of the case's institution with its per-scan variation, and the planned tumour
parameters. With the defaults it reproduces the published study exactly (:data:`registry.STUDY_DESIGN`):
711 patients from 136 institutions (a heavy-tailed number of patients per institution), 339 men and 372
women, split 485 / 62 / 164 with the 164 test patients from 121 institutions that appear in neither train
nor tune. Smaller cohorts keep the proportions and the institution-disjoint test split.

Everything is drawn from ``numpy.random.SeedSequence`` children of one seed, so the same seed gives the
same table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from amt_core import registry

# --- population model --------------------------------------------------------------------------------------
#: histology frequencies (a surgical anterior-mediastinal series; thymic epithelial tumours dominate)
HISTOLOGY_P: dict[str, float] = {
    "thymoma_A": 0.08,
    "thymoma_AB": 0.20,
    "thymoma_B1": 0.12,
    "thymoma_B2": 0.17,
    "thymoma_B3": 0.11,
    "thymic_carcinoma": 0.10,
    "lymphoma": 0.08,
    "germ_cell_tumour": 0.05,
    "thymic_cyst": 0.06,
    "other": 0.03,
}
#: typical largest diameter (mm) per histology: (log-normal median, log sd)
HISTOLOGY_SIZE_MM: dict[str, tuple[float, float]] = {
    "thymoma_A": (45.0, 0.38),
    "thymoma_AB": (50.0, 0.38),
    "thymoma_B1": (50.0, 0.40),
    "thymoma_B2": (52.0, 0.40),
    "thymoma_B3": (55.0, 0.40),
    "thymic_carcinoma": (62.0, 0.38),
    "lymphoma": (72.0, 0.35),
    "germ_cell_tumour": (70.0, 0.35),
    "thymic_cyst": (35.0, 0.40),
    "other": (45.0, 0.45),
}
SIZE_RANGE_MM = (15.0, 120.0)

# --- scanner model -----------------------------------------------------------------------------------------
VENDOR_P = {"GE": 0.30, "Siemens": 0.30, "Philips": 0.18, "Canon": 0.17, "Fujifilm": 0.05}
THICKNESSES_MM = (0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
#: slice thickness preferences: large (train/tune) centres reconstruct thin; small centres vary more
THICKNESS_P_DEV = (0.12, 0.22, 0.18, 0.13, 0.12, 0.10, 0.13)
THICKNESS_P_EXT = (0.06, 0.12, 0.14, 0.10, 0.16, 0.14, 0.28)
#: reconstruction kernels: name -> (noise sd in HU at 0.7 mm pixels / 1 mm slices, PSF sigma in mm)
KERNELS: dict[str, tuple[float, float]] = {
    "soft": (12.0, 0.9),
    "standard": (18.0, 0.6),
    "sharp": (30.0, 0.35),
    "lung": (45.0, 0.25),
}
KERNEL_P = (0.30, 0.45, 0.17, 0.08)
#: contrast protocols an institution may use, as probabilities over registry.CONTRASTS
CONTRAST_PROTOCOLS = (
    (0.15, 0.80, 0.05),  # mostly venous-phase staging CT
    (0.60, 0.35, 0.05),  # mostly plain CT
    (0.10, 0.30, 0.60),  # CT angiography-heavy
    (0.35, 0.60, 0.05),
)

#: columns beyond the case table: the institution's scanner profile and this scan's variation
PROFILE_COLUMNS: tuple[str, ...] = (
    "case_index",
    "kernel",
    "fov_margin",
    "noise_hu",
    "psf_mm",
    "hu_offset",
    "enhancement",
    "patient_scale",
    "tumour_diameter_mm",
    "n_lesions",
)


def split_sizes(n_cases: int) -> tuple[int, int, int]:
    """(train, tune, test) counts in the published proportions 485 / 62 / 164."""
    d = registry.STUDY_DESIGN
    if n_cases < 3:
        raise ValueError(f"a cohort needs at least 3 cases (one per split), got {n_cases}")
    n_test = max(1, round(n_cases * d["n_test"] / d["n_cases"]))
    n_tune = max(1, round(n_cases * d["n_tune"] / d["n_cases"]))
    n_train = n_cases - n_test - n_tune
    if n_train < 1:
        raise ValueError(f"a cohort of {n_cases} cases leaves no training case")
    return n_train, n_tune, n_test


def institution_counts(n_cases: int, n_institutions: int | None) -> tuple[int, int]:
    """(development institutions, external test institutions)."""
    d = registry.STUDY_DESIGN
    _, _, n_test = split_sizes(n_cases)
    if n_institutions is None:
        if n_cases == d["n_cases"]:
            n_institutions = d["n_institutions"]
        else:
            n_institutions = max(2, round(d["n_institutions"] * n_cases / d["n_cases"]))
    if n_institutions < 2:
        raise ValueError(
            "the external test needs at least 2 institutions (one for development, one for test)"
        )
    if n_cases == d["n_cases"] and n_institutions == d["n_institutions"]:
        n_test_inst = d["n_test_institutions"]
    else:
        n_test_inst = round(n_institutions * d["n_test_institutions"] / d["n_institutions"])
    n_test_inst = int(min(n_test, max(1, n_test_inst)))
    n_dev_inst = max(1, n_institutions - n_test_inst)
    n_dev_inst = min(n_dev_inst, n_cases - n_test)
    return n_dev_inst, n_test_inst


def _heavy_tailed_counts(
    rng: np.random.Generator, total: int, n_groups: int, alpha: float, minimum: int = 1
) -> np.ndarray:
    """Split ``total`` into ``n_groups`` positive counts with a Zipf-like (heavy) tail."""
    if n_groups * minimum > total:
        minimum = total // n_groups
    ranks = np.arange(1, n_groups + 1, dtype=float)
    weights = ranks ** (-alpha) * rng.lognormal(0.0, 0.35, n_groups)
    weights /= weights.sum()
    extra = total - n_groups * minimum
    counts = np.full(n_groups, minimum, dtype=int)
    if extra > 0:
        raw = weights * extra
        base = np.floor(raw).astype(int)
        rest = extra - base.sum()
        order = np.argsort(-(raw - base), kind="stable")
        base[order[:rest]] += 1
        counts += base
    return counts


def _relpaths(case_id: str, split: str) -> tuple[str, str]:
    from amt_core.data.cohort import image_relpath, label_relpath

    return image_relpath(case_id, split), label_relpath(case_id, split)


def institution_profiles(n_dev: int, n_test: int, seed: int = 0) -> pd.DataFrame:
    """One scanner profile per institution (development centres first, then external test centres)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    rows = []
    for k in range(n_dev + n_test):
        external = k >= n_dev
        vendor = rng.choice(registry.VENDORS, p=[VENDOR_P[v] for v in registry.VENDORS])
        thick = float(rng.choice(THICKNESSES_MM, p=THICKNESS_P_EXT if external else THICKNESS_P_DEV))
        kernel = str(rng.choice(list(KERNELS), p=KERNEL_P))
        protocol = CONTRAST_PROTOCOLS[rng.integers(len(CONTRAST_PROTOCOLS))]
        rows.append(
            {
                "institution_id": f"INST{k + 1:03d}",
                "external": external,
                "vendor": str(vendor),
                "slice_thickness_mm": thick,
                "kernel": kernel,
                # field of view = body width x the centre's margin (tight to generous)
                "fov_margin": float(np.round(rng.uniform(0.98, 1.18), 3)),
                "noise_scale": float(rng.lognormal(0.0, 0.20)),
                # a mis-calibrated scanner shifts every HU value
                "hu_offset": float(np.round(rng.normal(0.0, 12.0 if external else 6.0), 1)),
                "p_none": protocol[0],
                "p_venous": protocol[1],
                "p_arterial": protocol[2],
                "enhancement": float(rng.uniform(0.75, 1.25)),
            }
        )
    return pd.DataFrame(rows)


def study_design(
    *, n_cases: int = registry.STUDY_DESIGN["n_cases"], n_institutions: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """The case table of a synthetic study, with each scan's scanner profile and planned tumour.

    Defaults reproduce :data:`amt_core.registry.STUDY_DESIGN` exactly. ``n_institutions`` defaults to 136
    for the full study and to a proportional number otherwise. Columns: ``registry.CASE_COLUMNS`` then
    :data:`PROFILE_COLUMNS`. ``tumour_volume_ml`` holds the planned volume (an ellipsoid estimate) until
    the volumes are generated, when it is replaced by the label's measured volume.
    """
    n_cases = int(n_cases)
    d = registry.STUDY_DESIGN
    n_train, n_tune, n_test = split_sizes(n_cases)
    n_dev_inst, n_test_inst = institution_counts(n_cases, n_institutions)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, n_cases]))

    # patients per institution: development centres are few and large, external centres many and small
    n_dev_cases = n_train + n_tune
    dev_counts = _heavy_tailed_counts(
        rng, n_dev_cases, n_dev_inst, alpha=0.9, minimum=min(3, n_dev_cases // n_dev_inst)
    )
    test_counts = _heavy_tailed_counts(rng, n_test, n_test_inst, alpha=1.6, minimum=1)
    inst_of_case = np.concatenate(
        [
            np.repeat(np.arange(n_dev_inst), dev_counts),
            n_dev_inst + np.repeat(np.arange(n_test_inst), test_counts),
        ]
    )
    splits = np.array(["train"] * n_dev_cases + ["test"] * n_test, dtype=object)
    # tune patients: drawn from the development centres, at least one if the tune split exists
    tune_idx = rng.choice(n_dev_cases, size=n_tune, replace=False)
    splits[tune_idx] = "tune"
    # shuffle the case order so that case ids do not reveal the split or institution
    order = rng.permutation(n_cases)
    inst_of_case, splits = inst_of_case[order], splits[order]

    n_male = round(n_cases * d["n_male"] / d["n_cases"])
    sex = np.array(["F"] * n_cases, dtype=object)
    sex[rng.choice(n_cases, size=n_male, replace=False)] = "M"

    profiles = institution_profiles(n_dev_inst, n_test_inst, seed)
    hist_names = list(HISTOLOGY_P)
    rows = []
    for i in range(n_cases):
        crng = np.random.default_rng(np.random.SeedSequence([seed, 2, i]))
        prof = profiles.iloc[int(inst_of_case[i])]
        s = str(sex[i])
        # histology, with age dependence (germ cell tumours and lymphoma in the young)
        age = float(np.clip(crng.normal(57.0, 13.0), 18, 88))
        p = np.array([HISTOLOGY_P[h] for h in hist_names])
        if age < 40:
            p[hist_names.index("germ_cell_tumour")] *= 4.0 if s == "M" else 1.5
            p[hist_names.index("lymphoma")] *= 2.5
        histology = str(crng.choice(hist_names, p=p / p.sum()))
        if histology in ("germ_cell_tumour", "lymphoma"):
            age = float(np.clip(crng.normal(33.0, 10.0), 18, 75))
        contrast = str(crng.choice(registry.CONTRASTS, p=[prof.p_none, prof.p_venous, prof.p_arterial]))
        # per-scan variation around the institution's protocol
        thick = prof.slice_thickness_mm
        if crng.random() < 0.15:
            thick = float(crng.choice(THICKNESSES_MM))
        kernel = prof.kernel if crng.random() > 0.1 else str(crng.choice(list(KERNELS)))
        median, sd = HISTOLOGY_SIZE_MM[histology]
        diam = float(np.clip(median * math.exp(crng.normal(0.0, sd)), *SIZE_RANGE_MM))
        n_lesions = 2 if crng.random() < 0.10 else 1
        # patient size: men larger; slightly larger in middle age
        scale = float(np.clip(crng.normal(1.05 if s == "M" else 0.95, 0.06), 0.8, 1.25))
        planned_ml = math.pi / 6.0 * diam * (0.75 * diam) * (0.85 * diam) / 1000.0
        case_id = f"AMT{i + 1:04d}"
        split = str(splits[i])
        image, label = _relpaths(case_id, split)
        rows.append(
            {
                "case_id": case_id,
                "patient_id": f"P{i + 1:04d}",
                "institution_id": prof.institution_id,
                "split": split,
                "sex": s,
                "age": int(round(age)),
                "histology": histology,
                "tumour_volume_ml": round(planned_ml, 2),
                "contrast": contrast,
                "slice_thickness_mm": thick,
                "vendor": prof.vendor,
                "image": image,
                "label": label,
                "case_index": i,
                "kernel": kernel,
                "fov_margin": float(np.round(prof.fov_margin * crng.lognormal(0.0, 0.04), 3)),
                "noise_hu": float(
                    np.round(KERNELS[kernel][0] * prof.noise_scale * crng.lognormal(0, 0.1), 2)
                ),
                "psf_mm": KERNELS[kernel][1],
                "hu_offset": float(np.round(prof.hu_offset + crng.normal(0.0, 3.0), 1)),
                "enhancement": float(np.round(prof.enhancement * crng.lognormal(0, 0.15), 3)),
                "patient_scale": round(scale, 3),
                "tumour_diameter_mm": round(diam, 1),
                "n_lesions": n_lesions,
            }
        )
    df = pd.DataFrame(rows, columns=list(registry.CASE_COLUMNS) + list(PROFILE_COLUMNS))
    return df


def check_design(df: pd.DataFrame) -> list[str]:
    """Problems with a design (used by tests and by ``build_cohort``): leakage and split sanity."""
    from amt_core.data.cases import leakage_problems

    problems = leakage_problems(df)  # the case table's own leakage check
    if df.patient_id.duplicated().any():
        problems.append("duplicate patient ids")
    if df.case_id.duplicated().any():
        problems.append("duplicate case ids")
    return problems
