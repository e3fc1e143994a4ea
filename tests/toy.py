"""A toy cohort for the model's tests: small CT-like volumes (air, an elliptic body of soft tissue, a
brighter spherical "tumour" in front of the body centre) in the cohort folder layout with a valid case
table. Seconds to write; not the study's synthetic cohort (``amt_core.synth``). Test scaffolding: it lives
beside the tests (``from toy import toy_cohort``), not in the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from amt_core.registry import CASE_COLUMNS


def toy_case(rng: np.random.Generator, shape=(40, 40, 32), spacing=(3.0, 3.0, 3.0)):
    """(image int16 HU, label uint8, affine) of one toy case."""
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    cx, cy = shape[0] / 2 + rng.normal(0, 1), shape[1] / 2 + rng.normal(0, 1)
    body = ((x - cx) / (0.42 * shape[0])) ** 2 + ((y - cy) / (0.36 * shape[1])) ** 2 <= 1.0
    image = np.where(body, 20.0, -1000.0).astype(np.float32)
    lungs = (
        ((np.abs(x - cx) - 0.2 * shape[0]) / (0.12 * shape[0])) ** 2 + ((y - cy) / (0.22 * shape[1])) ** 2
    ) <= 1
    image[lungs & body] = -850.0
    r = rng.uniform(2.5, 4.5)
    tc = (cx + rng.normal(0, 1.5), cy + 0.15 * shape[1] + rng.normal(0, 1), shape[2] / 2 + rng.normal(0, 2))
    label = ((x - tc[0]) ** 2 + (y - tc[1]) ** 2 + (z - tc[2]) ** 2 <= r * r) & body
    image[label] = 90.0
    image += rng.normal(0, 15, shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True)]
    return np.round(image).astype(np.int16), label.astype(np.uint8), affine


def toy_cohort(
    out_dir: str | Path,
    n_train: int = 4,
    n_tune: int = 2,
    n_test: int = 2,
    seed: int = 0,
    shape=(40, 40, 32),
    spacing=(3.0, 3.0, 3.0),
) -> Path:
    """Write a toy cohort folder (imagesTr/labelsTr/imagesTs/labelsTs + cases.csv); returns cases.csv."""
    import pandas as pd

    from amt_core.data.volume import write_volume

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows = []
    splits = ["train"] * n_train + ["tune"] * n_tune + ["test"] * n_test
    for i, split in enumerate(splits):
        case_id = f"TOY{i:03d}"
        image, label, affine = toy_case(rng, shape, spacing)
        sub = "Ts" if split == "test" else "Tr"
        write_volume(image, affine, out / f"images{sub}" / f"{case_id}_0000.nii.gz")
        write_volume(label, affine, out / f"labels{sub}" / f"{case_id}.nii.gz")
        rows.append({
            "case_id": case_id, "patient_id": f"P{i:03d}", "institution_id": "EXT" if split == "test" else "DEV",
            "split": split, "sex": "MF"[i % 2], "age": 50, "histology": "thymoma_B1",
            "tumour_volume_ml": float(label.sum() * np.prod(spacing) / 1000), "contrast": "none",
            "slice_thickness_mm": spacing[2], "vendor": "GE",
            "image": f"images{sub}/{case_id}_0000.nii.gz", "label": f"labels{sub}/{case_id}.nii.gz",
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=list(CASE_COLUMNS))
    table.to_csv(out / "cases.csv", index=False)
    return out / "cases.csv"
