"""The case table: reading, validation (one message listing every problem), cohort layout helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amt_core.data.cases import CaseTableError, read_cases, validate_cases
from amt_core.data.cohort import (
    CASES_CSV,
    case_paths,
    image_relpath,
    label_relpath,
    read_cohort,
    write_cases,
)
from amt_core.registry import CASE_COLUMNS


def _table(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / CASES_CSV, dtype=str)


def _rewrite(root: Path, df: pd.DataFrame) -> Path:
    df.to_csv(root / CASES_CSV, index=False)
    return root / CASES_CSV


def test_read_valid_table(tiny_cohort):
    df = read_cases(tiny_cohort / CASES_CSV)
    assert list(df.columns) == list(CASE_COLUMNS)
    assert len(df) == 6
    for column in ("image", "label"):
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in df[column])
    assert df["age"].dtype.kind in "if"
    assert set(df["split"]) == {"train", "tune", "test"}


def test_ids_stay_text(tiny_cohort):
    df = _table(tiny_cohort)
    df["patient_id"] = [f"{i:03d}" for i in range(1, 7)]
    df = read_cases(_rewrite(tiny_cohort, df))
    assert df["patient_id"].tolist()[0] == "001"


def test_cohort_layout(tiny_cohort):
    assert image_relpath("c1", "train") == "imagesTr/c1_0000.nii.gz"
    assert image_relpath("c1", "tune") == "imagesTr/c1_0000.nii.gz"
    assert image_relpath("c1", "test") == "imagesTs/c1_0000.nii.gz"
    assert label_relpath("c1", "test") == "labelsTs/c1.nii.gz"
    with pytest.raises(ValueError, match="unknown split"):
        image_relpath("c1", "validation")
    dataset = json.loads((tiny_cohort / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"}
    assert dataset["labels"] == {"background": 0, "tumour": 1}
    assert dataset["numTraining"] == 4
    assert dataset["file_ending"] == ".nii.gz"
    assert len(list((tiny_cohort / "imagesTr").glob("*_0000.nii.gz"))) == 4
    assert len(list((tiny_cohort / "labelsTs").glob("*.nii.gz"))) == 2
    image, label = case_paths(tiny_cohort, "case_005", "test")
    assert image.is_file() and label.is_file()
    assert len(read_cohort(tiny_cohort)) == 6


def test_write_cases_makes_paths_relative(tiny_cohort):
    df = read_cases(tiny_cohort / CASES_CSV)
    df["extra"] = 1
    write_cases(tiny_cohort, df)
    raw = _table(tiny_cohort)
    assert raw["image"][0] == "imagesTr/case_001_0000.nii.gz"
    assert list(raw.columns) == [*CASE_COLUMNS, "extra"]
    assert not list(tiny_cohort.glob(".*tmp*"))


def test_every_problem_in_one_message(tiny_cohort):
    """Several problems at once: all are listed in one CaseTableError."""
    df = _table(tiny_cohort).drop(columns=["vendor"])
    df.loc[0, "split"] = "validation"
    df.loc[1, "sex"] = "X"
    df.loc[2, "case_id"] = "case_001"
    df.loc[3, "image"] = "imagesTr/nope_0000.nii.gz"
    df.loc[4, "age"] = "old"
    with pytest.raises(CaseTableError) as info:
        read_cases(_rewrite(tiny_cohort, df))
    message = str(info.value)
    assert str(tiny_cohort / CASES_CSV) in message
    for expected in [
        "missing column(s): vendor",
        "unknown split ['validation'] in row 2",
        "unknown sex ['X'] in row 3",
        "duplicate case_id ['case_001'] in rows 2, 4",
        "image file not found for case case_004",
        "nope_0000.nii.gz",
        "age is not a number: ['old']",
    ]:
        assert expected in message, expected
    assert len(info.value.problems) == 6


def test_check_files_off(tiny_cohort):
    df = _table(tiny_cohort)
    df.loc[0, "label"] = "labelsTr/missing.nii.gz"
    path = _rewrite(tiny_cohort, df)
    out = read_cases(path, check_files=False)
    assert out["label"][0] == str(tiny_cohort.resolve() / "labelsTr/missing.nii.gz")
    with pytest.raises(CaseTableError, match="label file not found for case case_001"):
        read_cases(path)


@pytest.mark.parametrize(
    ("column", "row", "value", "expected"),
    [
        ("case_id", 0, "", "empty case_id in row 2"),
        ("case_id", 0, "case 1/../x", "case_id with characters other than"),
        ("histology", 0, "thymoma_Z", "unknown histology ['thymoma_Z']"),
        ("contrast", 0, "oral", "unknown contrast ['oral']"),
        ("age", 0, "-3", "age out of range"),
        ("slice_thickness_mm", 0, "0", "slice_thickness_mm out of range"),
        ("label", 1, "labelsTr/case_001.nii.gz", "the same label file is used by several cases"),
    ],
)
def test_single_problem(tiny_cohort, column, row, value, expected):
    df = _table(tiny_cohort)
    df.loc[row, column] = value
    with pytest.raises(CaseTableError) as info:
        read_cases(_rewrite(tiny_cohort, df), check_files=False)
    assert expected in str(info.value)


def test_validate_cases_returns_list(tiny_cohort):
    df = read_cases(tiny_cohort / CASES_CSV)
    assert validate_cases(df, tiny_cohort) == []
    df.loc[5, "institution_id"] = "INST-A"
    problems = validate_cases(df, tiny_cohort)
    assert problems == [
        "leakage: test-split institution(s) ['INST-A'] also appear in train/tune "
        "(the external test must be institution-disjoint)"
    ]


def test_missing_and_empty_table(tmp_path):
    with pytest.raises(CaseTableError, match="no such file"):
        read_cases(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text(",".join(CASE_COLUMNS) + "\n")
    with pytest.raises(CaseTableError, match="no cases"):
        read_cases(tmp_path / "empty.csv")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(CaseTableError, match="not a readable CSV"):
        read_cases(tmp_path / "blank.csv")


def test_absolute_paths_accepted(tiny_cohort, tmp_path):
    df = read_cases(tiny_cohort / CASES_CSV)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    df.to_csv(elsewhere / "cases.csv", index=False)
    assert np.array_equal(read_cases(elsewhere / "cases.csv")["image"], df["image"])
