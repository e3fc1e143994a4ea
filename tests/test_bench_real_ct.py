"""The yardstick of ``benchmarks/bench_real_ct.py``: what a tumour's outline lies against."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_real_ct", ROOT / "benchmarks" / "bench_real_ct.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scene(left: float, right: float):
    """A 40 HU box in the middle of a slab whose left half is ``left`` HU and right half ``right`` HU."""
    image = np.full((60, 60, 6), right, np.float32)
    image[:30] = left
    label = np.zeros(image.shape, np.uint8)
    label[24:36, 20:40, 1:5] = 1
    image[label > 0] = 40.0
    return image, label


def test_border_composition_splits_the_outline_by_what_lies_beside_it(bench):
    image, label = _scene(-850.0, 45.0)  # lung on one side, unenhanced blood on the other
    c = bench.border_composition(image, label, (1.0, 1.0, 2.0))
    assert c["lung"] == pytest.approx(0.5, abs=0.08)
    assert c["like_tumour"] == pytest.approx(0.5, abs=0.08)
    assert c["fat"] == pytest.approx(0.0, abs=0.02)
    assert c["border_contrast"] == pytest.approx(1.0 - c["like_tumour"])
    image, label = _scene(-100.0, 160.0)  # fat and enhanced blood: all of it stands out, none of it lung
    c = bench.border_composition(image, label, (1.0, 1.0, 2.0))
    assert c["border_contrast"] > 0.97  # all but where the 3 x 3 median straddles the seam and the tumour
    assert c["lung"] == 0.0 and c["fat"] == pytest.approx(0.5, abs=0.08)


def test_insertion_table_reports_the_composition_of_each_group(bench):
    ins = pd.DataFrame(
        {
            "seed": [100, 100],
            "background": ["a.nii.gz", "b.nii.gz"],
            "histology": ["thymoma_AB", "lymphoma"],
            "detected": [True, False],
            "dice": [0.8, 0.1],
            "tumour_max_prob": [0.9, 0.2],
            "fp_ml": [1.0, 2.0],
            "border_contrast": [0.6, 0.4],
            "lung": [0.1, 0.3],
            "fat": [0.2, 0.1],
            "like_tumour": [0.4, 0.6],
        }
    )
    syn = pd.DataFrame(
        {
            "kind": ["synthetic"],
            "contrast": ["none"],
            "border_contrast": [0.8],
            "lung": [0.3],
            "fat": [0.3],
            "like_tumour": [0.2],
        }
    )
    text = "\n".join(bench.insertion_markdown(ins, syn))
    assert "**1 of 2 detected**" in text
    assert "| synthetic, unenhanced | 1 | 0.80 (0.80) | 0.30 | 0.30 | 0.20 |" in text
    assert "| the insertions above | 2 | 0.50 (0.42) | 0.20 | 0.15 | 0.50 |" in text
