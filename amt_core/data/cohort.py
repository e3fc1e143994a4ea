"""Cohort folders: the nnU-Net v2 raw layout plus the case table.

```
COHORT/
  cases.csv                        the case table (image/label relative to COHORT)
  dataset.json                     nnU-Net v2 dataset description
  imagesTr/{case_id}_0000.nii.gz   labelsTr/{case_id}.nii.gz     train and tune splits
  imagesTs/{case_id}_0000.nii.gz   labelsTs/{case_id}.nii.gz     test split
```
A cohort folder can be handed to nnU-Net (``nnUNetv2_plan_and_preprocess``) or MONAI unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from amt_core.atomic import write_csv, write_json
from amt_core.registry import CASE_COLUMNS, SPLITS, TRAINING_SPLITS

CASES_CSV = "cases.csv"
DATASET_JSON = "dataset.json"
FILE_ENDING = ".nii.gz"
CHANNEL_NAMES = {"0": "CT"}
LABELS = {"background": 0, "tumour": 1}


def _folder_suffix(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    return "Tr" if split in TRAINING_SPLITS else "Ts"


def image_relpath(case_id: str, split: str) -> str:
    """``imagesTr/{case_id}_0000.nii.gz`` (train/tune) or ``imagesTs/...`` (test), relative to the cohort."""
    return f"images{_folder_suffix(split)}/{case_id}_0000{FILE_ENDING}"


def label_relpath(case_id: str, split: str) -> str:
    """``labelsTr/{case_id}.nii.gz`` (train/tune) or ``labelsTs/...`` (test), relative to the cohort."""
    return f"labels{_folder_suffix(split)}/{case_id}{FILE_ENDING}"


def case_paths(root: str | os.PathLike, case_id: str, split: str) -> tuple[Path, Path]:
    """Absolute (image, label) paths of one case in a cohort folder."""
    root = Path(root)
    return root / image_relpath(case_id, split), root / label_relpath(case_id, split)


def dataset_json(cases: pd.DataFrame, name: str = "amt cohort") -> dict:
    """The nnU-Net v2 ``dataset.json`` content for a case table (numTraining = train + tune cases)."""
    n_training = int(cases["split"].isin(TRAINING_SPLITS).sum())
    return {
        "name": name,
        "description": "Chest CT with anterior mediastinal tumour masks (label 1); splits and metadata in cases.csv",
        "channel_names": dict(CHANNEL_NAMES),
        "labels": dict(LABELS),
        "numTraining": n_training,
        "file_ending": FILE_ENDING,
    }


def write_dataset_json(root: str | os.PathLike, cases: pd.DataFrame, name: str | None = None) -> Path:
    """Write ``root/dataset.json`` (atomic)."""
    root = Path(root)
    return write_json(root / DATASET_JSON, dataset_json(cases, name or root.name))


def write_cases(root: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write ``root/cases.csv`` (atomic): columns in ``CASE_COLUMNS`` order then any extras, rows in the
    given order, ``image``/``label`` relative to ``root`` (absolute paths under ``root`` are made relative)."""
    root = Path(root)
    out = df.copy()
    for column in ("image", "label"):
        if column in out.columns:
            out[column] = [_relative(root, p) for p in out[column]]
    columns = [c for c in CASE_COLUMNS if c in out.columns] + [
        c for c in out.columns if c not in CASE_COLUMNS
    ]
    return write_csv(root / CASES_CSV, out[columns])


def read_cohort(root: str | os.PathLike, check_files: bool = True) -> pd.DataFrame:
    """The validated case table of a cohort folder (paths absolute)."""
    from amt_core.data.cases import read_cases

    return read_cases(Path(root) / CASES_CSV, check_files=check_files)


def _relative(root: Path, p) -> str | None:
    if p is None or (not isinstance(p, (str, os.PathLike)) and pd.isna(p)):
        return None
    path = Path(p)
    if not path.is_absolute():
        return path.as_posix()
    for base in (root, root.resolve()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    return path.as_posix()
