"""The synthetic study design reproduces the published cohort and keeps the external test institution-disjoint."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from amt_core import registry
from amt_core.synth.design import PROFILE_COLUMNS, check_design, split_sizes, study_design


@pytest.fixture(scope="module")
def design() -> pd.DataFrame:
    return study_design()


def test_default_design_reproduces_the_study_exactly(design):
    d = registry.STUDY_DESIGN
    assert len(design) == d["n_cases"] == 711
    assert design.patient_id.nunique() == 711 and design.case_id.nunique() == 711
    assert design.institution_id.nunique() == d["n_institutions"] == 136
    assert (design.sex == "M").sum() == d["n_male"] == 339
    assert (design.sex == "F").sum() == d["n_female"] == 372
    counts = design.split.value_counts()
    assert (counts["train"], counts["tune"], counts["test"]) == (485, 62, 164)
    test_inst = set(design.loc[design.split == "test", "institution_id"])
    dev_inst = set(design.loc[design.split != "test", "institution_id"])
    assert len(test_inst) == d["n_test_institutions"] == 121
    assert not test_inst & dev_inst
    assert check_design(design) == []


def test_design_columns_and_values(design):
    assert list(design.columns) == list(registry.CASE_COLUMNS) + list(PROFILE_COLUMNS)
    assert set(design.split) == set(registry.SPLITS)
    assert set(design.histology) <= set(registry.HISTOLOGIES)
    assert set(design.contrast) <= set(registry.CONTRASTS)
    assert set(design.vendor) <= set(registry.VENDORS)
    assert design.slice_thickness_mm.between(0.625, 5.0).all()
    assert design.tumour_diameter_mm.between(15.0, 120.0).all()
    assert 0.05 <= (design.n_lesions > 1).mean() <= 0.16  # a minority have a second lesion
    assert design.age.between(18, 90).all()
    # nnU-Net layout, relative to the case table
    tr = design.split != "test"
    assert design.loc[tr, "image"].str.match(r"^imagesTr/AMT\d{4}_0000\.nii\.gz$").all()
    assert design.loc[~tr, "label"].str.match(r"^labelsTs/AMT\d{4}\.nii\.gz$").all()


def test_patients_per_institution_are_heavy_tailed(design):
    per = design.groupby("institution_id").size().sort_values(ascending=False)
    assert per.iloc[0] >= 50  # a few large centres ...
    assert (per == 1).sum() >= 60  # ... and many contributing a single patient
    assert per.iloc[0] / per.median() >= 20


def test_design_is_deterministic_and_seeded(design):
    pd.testing.assert_frame_equal(design, study_design())
    other = study_design(seed=1)
    assert not other[["sex", "age", "histology"]].equals(design[["sex", "age", "histology"]])
    # counts are fixed by the design whatever the seed
    assert other.split.value_counts().to_dict() == design.split.value_counts().to_dict()
    assert other[other.split == "test"].institution_id.nunique() == 121


@pytest.mark.parametrize("n", [3, 12, 40, 100])
def test_small_designs_keep_proportions_and_disjoint_test(n):
    df = study_design(n_cases=n, seed=3)
    assert len(df) == n
    n_train, n_tune, n_test = split_sizes(n)
    assert df.split.value_counts().reindex(list(registry.SPLITS)).tolist() == [n_train, n_tune, n_test]
    assert min(n_train, n_tune, n_test) >= 1
    assert check_design(df) == []
    assert abs((df.sex == "M").sum() - n * 339 / 711) <= 0.5 + 1e-9


def test_too_small_a_design_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        study_design(n_cases=2)


def test_cli_design_only_writes_the_case_table_in_seconds(tmp_path):
    out = tmp_path / "design"
    res = subprocess.run(
        [sys.executable, "-m", "amt_core.cli", "cohort", "--design-only", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    cases = pd.read_csv(out / "cases.csv")
    assert list(cases.columns) == list(registry.CASE_COLUMNS)
    assert len(cases) == 711
    assert (out / "dataset.json").is_file() and (out / "design.csv").is_file()
    assert not (out / "imagesTr").exists()


def test_table_one(design):
    from amt_core.synth.summary import table_one

    t1 = table_one(design)
    assert list(t1.columns) == ["train", "tune", "test", "all"]
    assert t1.loc["n"].tolist() == ["485", "62", "164", "711"]
    assert t1.loc["institutions", "test"] == "121"
    assert t1.loc["institutions", "all"] == "136"
    assert t1.loc["sex: M", "all"].startswith("339 ")
    assert "age, mean ± SD" in t1.index
    assert "tumour volume ml, median [IQR]" in t1.index
    assert any(i.startswith("histology: thymoma_AB") for i in t1.index)
    assert any(i.startswith("vendor: ") for i in t1.index)
    assert any(i.startswith("slice thickness: ") for i in t1.index)


def test_table_one_of_an_imported_cohort_counts_what_is_missing_and_what_is_not_in_the_registry():
    """Missing values get a "not stated" row, a vendor outside the registry a row of its own, a mean or
    median over fewer than n cases says over how many, and each characteristic's counts add up to n."""
    from amt_core.synth.summary import table_one

    df = pd.DataFrame(
        {
            "case_id": list("abcde"),
            "institution_id": ["i", "i", "j", "k", "k"],
            "split": ["train", "train", "test", "test", "test"],
            "sex": ["M", None, "F", "F", ""],
            "age": [50, None, 60, 70, 80],
            "histology": ["thymoma_A"] * 5,
            "tumour_volume_ml": [1.0, 2.0, 3.0, None, 5.0],
            "contrast": ["none", "", None, "venous", "venous"],
            "slice_thickness_mm": [10.0, None, 2.0, 0.625, 2.0],
            "vendor": ["GE", "Hitachi", "", None, "Not stated"],
        }
    )
    t1 = table_one(df)
    col = t1["all"]
    for prefix in ("sex: ", "contrast: ", "slice thickness: ", "vendor: ", "histology: "):
        rows = [r for r in t1.index if r.startswith(prefix)]
        assert sum(int(col[r].split()[0]) for r in rows) == 5, prefix
    assert col["sex: not stated"].startswith("2 ") and col["vendor: Hitachi"].startswith("1 ")
    # "Not stated" written in the table is the missing row's, not a second row of the same name
    assert col["vendor: not stated"].startswith("3 ") and t1.loc["contrast: arterial", "all"].startswith("0 ")
    # thicknesses in numeric order (10 mm last), no "nan mm" row
    assert [r for r in t1.index if r.startswith("slice thickness: ")] == [
        "slice thickness: 0.625 mm",
        "slice thickness: 2 mm",
        "slice thickness: 10 mm",
        "slice thickness: not stated",
    ]
    assert (
        col["age, mean ± SD"] == "65.0 ± 12.9 (n = 4)" and t1.loc["age, mean ± SD", "test"] == "70.0 ± 10.0"
    )
    assert t1.loc["tumour volume ml, median [IQR]", "test"].endswith("(n = 2)")
