"""The real-anatomy test subset reported on its own (issue 15 §1): the parameter, the subgroup, the subset's
evaluation folder with the false positives on tumour-free real CT, its table, FROC curve and report section,
and nothing of it for a cohort without the subset.

Hand-made: three 12^3 scans evaluated by the engine (one synthetic, two "real" on two bundled patients) and a
tiny checkpoint of constant output for the tumour-free CTs (the counts are checked against the predictions'
own files, not against hard-coded numbers). The smoke run (params/smoke.yaml, real_anatomy: 1) covers the
notebooks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from amt_core.evaluation import EvalConfig
from amt_core.evaluation.api import collect, evaluate_case
from amt_core.evaluation.results import summarise
from amt_core.layout import RunLayout
from amt_core.pipeline import real_anatomy as RA
from amt_core.pipeline.params import ParameterError, check_parameters, load_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: two bundled patients (amt_core/synth/chest_backgrounds/backgrounds.csv), the two smallest scans
PATIENTS = {
    "REAL015": ("ACRIN-FLT-Breast_001", "ACRIN-FLT-Breast"),
    "REAL016": ("Lung_Dx-A0002", "Lung-PET-CT-Dx"),
}


# --- the parameter ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, message",
    [
        ({"real_anatomy": 5}, "real_anatomy must be in 0-4"),
        ({"real_anatomy": -1}, "real_anatomy must be in 0-4"),
        ({"real_anatomy": True}, "real_anatomy must be int"),
    ],
)
def test_real_anatomy_parameter_is_checked(tmp_path, content, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ParameterError, match=message):
        load_params(path)


def test_the_cohort_notebook_takes_it():
    ns = {
        "run_dir": "r",
        "seed": 0,
        "cohort_csv": "",
        "cohort_preset": "tiny",
        "n_cases": 14,
        "real_anatomy": 4,
        "n_example_slices": 0,
    }
    assert check_parameters("01_cohort", ns)["real_anatomy"] == 4
    with pytest.raises(ParameterError, match="real_anatomy must be in 0-4"):
        check_parameters("01_cohort", ns | {"real_anatomy": 9})


# --- the subgroup ------------------------------------------------------------------------------------------
def test_anatomy_subgroup_only_where_the_cohort_has_the_column():
    from amt_core.evaluation.stats import detection_subgroup_table, subgroup_table

    per_case = pd.DataFrame(
        {"case_id": list("abcd"), "institution_id": list("wxyz"), "dice": [0.9, 0.8, 0.2, 0.4]}
    )
    lesions = pd.DataFrame({"case_id": list("abcd"), "hit": [True, True, False, True]})
    cases = pd.DataFrame({"case_id": list("abcd"), "sex": list("MFMF"), "anatomy": ["real", "synthetic"] * 2})
    seg = subgroup_table(per_case, cases, metrics=("dice",), n_boot=20)
    det = detection_subgroup_table(lesions, cases)
    for table in (seg, det):
        assert list(table.loc[table.subgroup == "anatomy", "level"]) == ["synthetic", "real"]  # registry's
    real = seg.set_index(["subgroup", "level"]).loc[("anatomy", "real")]
    assert real["mean"] == pytest.approx((0.9 + 0.2) / 2)
    assert det.set_index(["subgroup", "level"]).at[("anatomy", "real"), "n_hit"] == 1
    without = cases.drop(columns="anatomy")
    for table in (
        subgroup_table(per_case, without, metrics=("dice",), n_boot=20),
        detection_subgroup_table(lesions, without),
    ):
        assert "anatomy" not in set(table.subgroup) and "sex" in set(table.subgroup)


# --- the subset's evaluation, table, figure and report section ---------------------------------------------
def _cases() -> pd.DataFrame:
    rows = [
        ("SYN001", "p1", "INST-1", "synthetic"),
        *((c, pid, f"REAL-{pid}", "real") for c, (pid, _) in PATIENTS.items()),
    ]
    return pd.DataFrame(
        {
            "case_id": [r[0] for r in rows],
            "patient_id": [r[1] for r in rows],
            "institution_id": [r[2] for r in rows],
            "split": "test",
            "histology": "thymoma_AB",
            "anatomy": [r[3] for r in rows],
        }
    )


def _result(config: EvalConfig):
    """The engine on three 12^3 scans: SYN001 and REAL015 found exactly, REAL016 missed with one false
    positive elsewhere."""
    label = np.zeros((12, 12, 12), np.uint8)
    label[3:7, 3:7, 3:7] = 1
    elsewhere = np.zeros_like(label)
    elsewhere[8:11, 8:11, 8:11] = 1
    evaluations = [
        evaluate_case(label, m, (2.0, 2.0, 2.0), config, prob=m * np.float32(0.9))
        for m in (label, label, elsewhere)
    ]
    cases = _cases()
    return summarise(collect(evaluations, list(cases.case_id), list(cases.institution_id)), config)


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory):
    """A run folder with a tiny checkpoint that calls the whole body box tumour (every scan a false positive
    of known extent, fast to extract), and the subset evaluated by evaluate_real_anatomy."""
    import torch

    from amt_core.model.checkpoint import save_checkpoint
    from amt_core.model.network import build_network
    from amt_core.model.presets import get_config

    layout = RunLayout.of(tmp_path_factory.mktemp("real") / "run")
    torch.manual_seed(0)
    cfg = get_config(
        "cpu",
        patch_size=(32, 32, 32),
        channels=(4, 8, 16),
        strides=(2, 2),
        target_spacing=(8.0, 8.0, 8.0),
        roi="body",
        intensity_stats={"lo": -200.0, "hi": 300.0, "mean": 40.0, "std": 60.0},
    )
    net = build_network(cfg)
    with torch.no_grad():  # a constant tumour probability of 0.9 inside the body box: one candidate per scan
        for p in net.parameters():
            p.zero_()
        last = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)][-1]
        last.bias.copy_(torch.tensor([0.0, 2.2]))
    save_checkpoint(layout.model_path, model=net, cfg=cfg)
    config = EvalConfig(n_boot=50, seed=0)
    result = _result(config)
    subset = RA.evaluate_real_anatomy(layout, _cases(), result)
    return layout, result, subset


def test_the_subset_is_the_external_tests_evaluation_of_those_scans(subset_run):
    from amt_core.evaluation import EvaluationResult

    layout, result, subset = subset_run
    saved = EvaluationResult.load(layout.real_anatomy_dir)
    assert list(saved.per_case.case_id) == list(PATIENTS) and saved.summary["n_scans"] == 2
    pd.testing.assert_frame_equal(
        saved.per_case, result.per_case[result.per_case.case_id.isin(PATIENTS)].reset_index(drop=True)
    )
    assert saved.summary["n_lesions"] == 2 and saved.headline["sensitivity"] == pytest.approx(0.5)
    assert set(layout.real_anatomy_dirs()) == {layout.real_anatomy_dir, layout.real_backgrounds_dir}


def test_tumour_free_ct_false_positives_are_the_predictions_own(subset_run):
    import nibabel as nib

    layout, result, subset = subset_run
    free = subset.tables[RA.TUMOUR_FREE]
    assert list(free.case_id) == list(PATIENTS) and list(free.collection) == [c for _, c in PATIENTS.values()]
    # the constant model: one candidate per scan, the whole body box
    assert (free.fp == 1).all() and (free.fp_volume_ml > 100).all()
    assert free.bundled.all()  # the cohort folder records no other backgrounds: amt's bundle
    for row in free.itertuples():
        stem = row.background.split(".")[0]
        folder = layout.real_backgrounds_dir / stem
        mask = nib.load(folder / f"{stem}.nii.gz")
        ml = float(np.prod(mask.header.get_zooms())) / 1000.0
        assert row.fp_volume_ml == pytest.approx(float(np.asarray(mask.dataobj).sum()) * ml)
        cands = pd.read_csv(folder / f"{stem}_candidates.csv")  # amt predict's own candidate table
        assert row.fp == int((cands.confidence >= result.config.operating_point).sum())
        assert row.max_confidence == pytest.approx(cands.confidence.max() if len(cands) else 0.0, abs=1e-6)


def test_table_and_report_section_count_scans_and_patients(subset_run):
    from amt_core.evaluation.stats import proportion_ci

    layout, result, subset = subset_run
    cases = _cases()
    table, display = RA.real_anatomy_table(RA.load_real_anatomy(layout), cases)
    scans, total = table.iloc[:-1], table.iloc[-1]
    per_case = result.per_case.set_index("case_id")
    assert list(scans.case_id) == list(PATIENTS) and len(display) == 3
    assert list(scans.detected) == [1, 0] and list(scans.fp) == list(per_case.loc[list(PATIENTS), "fp"])
    assert total.dice == pytest.approx(per_case.loc[list(PATIENTS), "dice"].mean())
    lo, hi = proportion_ci(1, 2)
    assert (total.lesions, total.detected, total.sensitivity_ci_lo, total.sensitivity_ci_hi) == (2, 1, lo, hi)
    free = subset.tables[RA.TUMOUR_FREE]
    assert total.tumour_free_fp == pytest.approx(free.fp.mean())
    text = "\n".join(RA.report_lines(layout, cases))
    assert text.startswith("## Real anatomy")
    for needle in (
        "**2 scans with tumours inserted into real chest CT of 2 distinct real patients**",
        "ACRIN-FLT-Breast (1 patient)",
        "Lung-PET-CT-Dx (1 patient)",
        "1 of 2 tumours found",
        f"{lo:.2f}–{hi:.2f}",
        "never saw",
        "all synthetic",
        "The Cancer Imaging Archive",
        "no precise estimate",
        "tables/real_anatomy.md",
    ):
        assert needle in text, needle


def test_froc_figure_draws_the_subset(subset_run):
    from amt_core.plots.froc import plot_froc_confidence

    layout, result, subset = subset_run
    fig = plot_froc_confidence(
        result.froc_confidence, subset=subset.froc_confidence, subset_label="Real anatomy"
    )
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "Real anatomy" in labels
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_cohort_without_the_subset_gets_none_and_loses_an_old_one(subset_run, tmp_path):
    import shutil

    layout, result, _ = subset_run
    run = RunLayout.of(tmp_path / "run")
    shutil.copytree(layout.root, run.root)  # a run whose earlier cohort had the subset
    cases = _cases().drop(columns="anatomy")
    assert RA.evaluate_real_anatomy(run, cases, result) is None
    assert run.real_anatomy_dirs() == [] and RA.load_real_anatomy(run) is None
    assert RA.report_lines(run, cases) == []
