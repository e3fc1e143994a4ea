"""The yardstick of ``benchmarks/bench_real_ct.py``: what a tumour's outline lies against."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_real_ct", ROOT / "benchmarks" / "bench_real_ct.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
            "below_top_mm": [20.0, 40.0],
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
    assert "| synthetic, unenhanced | 1 | 0.80 (0.80) | 0.30 | 0.30 | 0.20 | – |" in text  # no levels: a dash
    assert "| the insertions above | 2 | 0.50 (0.42) | 0.20 | 0.15 | 0.50 | 30 (25–35) |" in text
    assert "--context" not in text  # no context columns, no context table
    ins = ins.assign(
        ap_offset_mm=[-1.0, -7.0],
        lung_detected=[True, True],
        lung_dice=[0.7, 0.6],
        lung_tumour_max_prob=[1.0, 0.9],
        lung_ap_offset_mm=[0.0, 2.0],
        fat_detected=[True, False],
        fat_dice=[0.5, 0.0],
        fat_tumour_max_prob=[0.9, 0.1],
        fat_ap_offset_mm=[-2.0, float("nan")],  # no mask beside the second tumour: left out of the median
    )
    assert "Does the tumour change the answer?" not in text
    ins = ins.assign(tumour_marked=[0.9, 0.3], tumour_marked_without=[0.1, 0.3], mask_agreement=[0.2, 0.9])
    text = "\n".join(bench.insertion_markdown(ins, None))
    assert "| `a.nii.gz` | 0.90 | 0.10 | 0.20 |" in text and "| all | 0.60 | 0.20 | 0.55 |" in text
    assert "| as inserted | 1 of 2 | 0.450 | 0.55 | -4.0 (2) |" in text
    assert "| lung (-850 HU) within 20 mm | 2 of 2 | 0.650 | 0.95 | +1.0 (2) |" in text
    assert "| fat (-100 HU) within 20 mm | 1 of 2 | 0.250 | 0.50 | -2.0 (1) |" in text


def test_a_tumour_the_model_ignores_is_marked_as_much_without_it(bench):
    label = np.zeros((20, 20, 10), np.uint8)
    label[5:10, 5:10, 2:6] = 1
    region = np.zeros(label.shape, bool)
    region[4:12, 4:12, 1:8] = True  # the anatomy the model marks, tumour or not
    same = bench.marked_without_tumour(region, region, label)
    assert same == {"tumour_marked": 1.0, "tumour_marked_without": 1.0, "mask_agreement": 1.0}
    # a model that answers to the tumour: marks it with it, nothing without it
    seen = bench.marked_without_tumour(label > 0, np.zeros(label.shape, bool), label)
    assert (
        seen["tumour_marked"] == 1.0
        and seen["tumour_marked_without"] == 0.0
        and seen["mask_agreement"] == 0.0
    )
    half = label.copy()
    half[5:10, 5:10, 4:6] = 0  # marks half the tumour; without it, nothing there but the same elsewhere
    other = np.zeros(label.shape, bool)
    other[15:18, 15:18, 0:2] = True
    r = bench.marked_without_tumour((half > 0) | other, other, label)
    assert r["tumour_marked"] == pytest.approx(0.5) and r["tumour_marked_without"] == 0.0
    assert r["mask_agreement"] == pytest.approx(2 * 18 / (50 + 18 + 18))


def test_context_replaces_the_soft_tissue_round_the_tumour_only(bench):
    # a 40 HU tumour between fat (left) and unenhanced blood (right), bone in front of it (RAS: y grows
    # anteriorly) 2-4 mm away
    label = np.zeros((60, 60, 6), np.uint8)
    label[24:36, 20:40, 1:5] = 1
    image = np.where(np.arange(60)[:, None, None] < 30, -100.0, 45.0) * np.ones(label.shape, np.float32)
    image[label > 0], image[:, 42:] = 40.0, 700.0
    out = bench.with_context(image, label, (1.0, 1.0, 2.0), -850.0, mm=5.0)
    t = label > 0
    assert (out[t] == image[t]).all()  # the tumour untouched
    changed = out != image
    d = ndimage.distance_transform_edt(~t, sampling=(1.0, 1.0, 2.0))
    assert changed.any() and (d[changed] <= 5.0).all()  # only within 5 mm of it
    assert (image[changed] == 45.0).all()  # only soft tissue: not fat, not bone
    assert (out[(d <= 5.0) & (image == 45.0)] == -850.0).all()
    assert (out[:, 42:] == 700.0).all() and (out[image == -100.0] == -100.0).all()  # bone and fat stay


def test_level_below_the_inlet_is_read_from_the_background(bench):
    """The bundled background's top level is fixed: a tumour label two slices lower lies two slices further below."""
    import nibabel as nib

    from amt_core.synth.backgrounds import find_prevascular_space
    from amt_core.synth.hybrid import bundled_backgrounds

    path = bundled_backgrounds() / "acrin_flt_breast_013.nii.gz"
    img = nib.load(path)
    image = np.asarray(img.dataobj, np.float32)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    top = bench.top_level(image, spacing)
    assert top == find_prevascular_space(image, spacing).z_levels[1]
    label = np.zeros(image.shape, np.uint8)
    label[60:64, 40:44, top - 3] = 1
    assert bench.below_top_level_mm(top, label, spacing) == pytest.approx(3 * spacing[2])
    label = np.roll(label, -2, axis=2)
    assert bench.below_top_level_mm(top, label, spacing) == pytest.approx(5 * spacing[2])
    assert bench.top_level(np.full((40, 40, 10), -1000.0, np.float32), spacing) is None  # not a chest CT
    assert np.isnan(bench.below_top_level_mm(None, label, spacing))


def test_section_heading_names_the_options_it_was_made_with(bench, tmp_path):
    text = bench.markdown(tmp_path, pd.DataFrame(), options=" --insertions 5 --context")
    assert f"(`benchmarks/bench_real_ct.py --run {tmp_path} --insertions 5 --context`)" in text
    assert text.startswith(bench.START) and text.rstrip().endswith(bench.END)
