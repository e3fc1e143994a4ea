"""Inference: outputs in the input's own geometry, compact probability maps, candidate tables, clear errors,
and the ``amt train`` / ``amt predict`` commands."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from toy import toy_cohort

from amt_core.model.checkpoint import save_checkpoint
from amt_core.model.inference import infer_array, predict, resolve_inputs, roi_slices
from amt_core.model.network import build_network
from amt_core.model.presets import get_config

STATS = {"lo": -200.0, "hi": 300.0, "mean": 40.0, "std": 60.0}


@pytest.fixture(scope="module")
def model(untrained_model):
    return untrained_model


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return toy_cohort(tmp_path_factory.mktemp("toy"), n_train=1, n_tune=1, n_test=2)


def test_predict_writes_mask_prob_and_candidates_on_the_input_grid(model, cohort, tmp_path):
    image = cohort.parent / "imagesTs" / "TOY002_0000.nii.gz"
    out = predict(model, image, tmp_path / "pred", progress=False)
    src = nib.load(image)
    mask, prob = nib.load(out / "TOY002.nii.gz"), nib.load(out / "TOY002_prob.nii.gz")
    for img in (mask, prob):
        assert img.shape == src.shape and np.allclose(img.affine, src.affine)
    assert mask.get_data_dtype() == np.uint8 and prob.get_data_dtype() == np.uint8
    p = prob.get_fdata()
    # uint8 stored with scl_slope 1/255: every probability is a whole number of 1/255 steps
    assert prob.dataobj.slope == pytest.approx(1 / 255) and np.allclose(p * 255, np.round(p * 255), atol=1e-3)
    assert np.array_equal(np.asarray(mask.dataobj) > 0, p >= 0.5 - 1e-6)
    table = pd.read_csv(out / "TOY002_candidates.csv")
    assert list(table.columns) == [
        "candidate_id",
        "confidence",
        "voxels",
        "volume_ml",
        "x0",
        "x1",
        "y0",
        "y1",
        "z0",
        "z1",
        "kept",
    ]
    # the evaluation's candidates of the stored map; kept = holds voxels of the written mask
    from amt_core.evaluation import EvalConfig, lesions

    comps = lesions.extract_candidates(p.astype(np.float32), EvalConfig())
    assert sorted(table["voxels"]) == sorted(comps.voxels.tolist())
    assert table["kept"].any() == bool(np.asarray(mask.dataobj).any())
    assert table["confidence"].is_monotonic_decreasing


def test_predict_a_case_table_feeds_the_evaluation_engine(model, cohort, tmp_path):
    from amt_core.data.cases import read_cases
    from amt_core.evaluation.api import evaluate_predictions

    out = predict(model, cohort, tmp_path / "pred", split="test", progress=False)
    assert sorted(pd.read_csv(out / "predictions.csv")["case_id"]) == ["TOY002", "TOY003"]
    result = evaluate_predictions(read_cases(cohort), out, split="test", progress=False)
    assert len(result.per_case) == 2
    # the engine's Dice of a case is the overlap of the very mask files predict wrote
    row = result.per_case.set_index("case_id").loc["TOY002"]
    ref = np.asarray(nib.load(cohort.parent / "labelsTs" / "TOY002.nii.gz").dataobj) > 0
    got = np.asarray(nib.load(out / "TOY002.nii.gz").dataobj) > 0
    assert row["dice"] == pytest.approx(2 * (ref & got).sum() / max(ref.sum() + got.sum(), 1))


@pytest.mark.realdata
def test_lps_volume_round_trips_to_its_own_geometry(model, realdata, tmp_path):
    src_path = realdata / "cip_thorax_lowres" / "ct.nii.gz"  # LPS voxel order on disk
    out = predict(model, src_path, tmp_path, progress=False)
    src, got = nib.load(src_path), nib.load(out / "ct.nii.gz")
    assert nib.aff2axcodes(src.affine) == ("L", "P", "S")
    assert got.shape == src.shape and np.allclose(got.affine, src.affine, atol=1e-4)


@pytest.mark.realdata
@pytest.mark.parametrize("relpath", [
    "cip_thorax_lowres/ct.nrrd", "cip_thorax_lowres/dicom", "cip_thorax_lowres/ct2_testinput.nii.gz",
    "itkelastix_thorax/dicom_subset", "ts_abdomen_3mm/ct.nii.gz", "ts_abdomen_dicom/dicom",
])  # fmt: skip
def test_every_real_volume_gets_a_mask_in_its_geometry(model, realdata, tmp_path, relpath):
    from amt_core.data.volume import read_label, read_volume

    path = realdata / relpath
    out = predict(model, path, tmp_path, progress=False)
    case_id = pd.read_csv(out / "predictions.csv")["case_id"][0]
    # the evaluation engine's check: the mask lies on the image's grid
    mask = read_label(out / f"{case_id}.nii.gz", read_volume(path))
    assert mask.array.dtype == np.uint8


def test_not_ct_and_too_small_inputs_give_clear_errors(model, tmp_path):
    mr = np.random.default_rng(0).uniform(0, 800, (40, 40, 30)).astype(np.float32)
    nib.save(nib.Nifti1Image(mr, np.eye(4)), tmp_path / "mr.nii.gz")
    with pytest.raises(ValueError, match="not a CT in Hounsfield units"):
        predict(model, tmp_path / "mr.nii.gz", tmp_path / "out", progress=False)
    tiny = np.full((40, 40, 3), -1000.0, dtype=np.float32)
    tiny[10:30, 10:30] = 40.0
    nib.save(nib.Nifti1Image(tiny, np.eye(4)), tmp_path / "thin.nii.gz")
    with pytest.raises(ValueError, match="needs at least"):
        predict(model, tmp_path / "thin.nii.gz", tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict(model, tmp_path / "missing.nii.gz", tmp_path / "out", progress=False)


def test_roi_and_tta_keep_the_shape():
    cfg = get_config(
        "cpu",
        patch_size=(16, 16, 16),
        channels=(4, 8),
        strides=(2,),
        roi="mediastinum",
        roi_box=(0.25, 0.75, 0.5, 1.0),
    )
    assert roi_slices((40, 20, 10), cfg) == (slice(10, 30), slice(10, 20), slice(0, 10))
    net = build_network(cfg)
    prob = infer_array(net, np.zeros((40, 20, 10), np.float32), cfg, "cpu", tta=True)
    assert prob.shape == (40, 20, 10) and prob[:10].max() == 0 and prob[10:30, 10:].min() > 0


def test_resolve_inputs_names_cases(tmp_path):
    f = tmp_path / "AMT9_0000.nii.gz"
    f.write_bytes(b"")
    assert resolve_inputs(f) == [("AMT9", str(f))]
    with pytest.raises(ValueError, match="unknown input type"):
        (tmp_path / "x.txt").write_text("")
        resolve_inputs(tmp_path / "x.txt")


def test_cli_train_and_predict(cohort, tmp_path, capsys):
    from amt_core.cli import main

    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--cohort",
            str(cohort),
            "--out",
            str(run),
            "--max-epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--num-workers",
            "0",
            "--cache-dir",
            str(tmp_path / "c"),
            "--set",
            "patch_size=[32,32,32]",
            "--set",
            "channels=[8,16]",
            "--set",
            "strides=[2]",
            "--no-progress",
        ]
    )
    assert code == 0 and (run / "best.pt").is_file()
    # the installed command, in a fresh process
    pred = subprocess.run(
        [
            sys.executable,
            "-m",
            "amt_core.cli",
            "predict",
            "--model",
            str(run / "best.pt"),
            "--input",
            str(cohort),
            "--split",
            "test",
            "--out",
            str(tmp_path / "pred"),
            "--overlap",
            "0.5",
            "--tta",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert (tmp_path / "pred" / "TOY003_prob.nii.gz").is_file()
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "nope.pt"),
                "--input",
                str(cohort),
                "--out",
                str(tmp_path / "p2"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_postprocessing_is_chosen_on_tuning_cases_and_drops_small_components():
    from amt_core.model.postprocess import choose, filter_mask

    scans = []
    for k in range(3):
        label = np.zeros((30, 30, 30), np.uint8)
        label[5:15, 5:15, 5:15] = 1
        prob = label * 0.95
        prob[20 + k : 23 + k, 20:23, 20:23] = 0.6  # a small unconfident false positive
        scans.append((prob.astype(np.float32), label, (1.0, 1.0, 1.0)))
    choice = choose(scans, 0.5)
    assert choice["tune_dice_postprocessed"] == pytest.approx(1.0) and choice["tune_dice_raw"] < 1.0
    assert choice["min_component_ml"] > 0 or choice["min_component_conf"] > 0.6
    mask = filter_mask(
        scans[0][0], 0.5, (1.0, 1.0, 1.0), choice["min_component_ml"], choice["min_component_conf"]
    )
    assert np.array_equal(mask, scans[0][1])
    # nothing to gain: no filter
    assert choose([(c[1] * 0.9, c[1], (1.0, 1.0, 1.0)) for c in scans], 0.5)["min_component_ml"] == 0.0


def _cli(capsys, *args) -> tuple[int, str]:
    from amt_core.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def _tampered(model, tmp_path, name, edit) -> str:
    """A copy of ``model`` (a valid checkpoint) with ``edit`` applied to its saved dict."""
    state = torch.load(model, map_location="cpu", weights_only=True)
    edit(state)
    path = tmp_path / name
    torch.save(state, path)
    return str(path)


def _nan_weight(state):
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = state["model"][key].clone()
    state["model"][key].view(-1)[0] = float("nan")


def _changed_weight(state):  # finite, but not what was saved: only the recorded SHA-256 can tell
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = state["model"][key].clone()
    state["model"][key].view(-1)[0] += 1.0


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s.pop("config"), "records no config"),
        (lambda s: s.update(config='"a string"'), "config record is a str, not a JSON object"),
        (lambda s: s.update(config="{not json"), "config record is not valid JSON"),
        (lambda s: s.update(extra="[1, 2]"), "extra record is a list, not a JSON object"),
        (
            lambda s: s.update(config='{"threshold": 2.0}'),
            "model config is not valid: invalid model settings: threshold",
        ),
        (_nan_weight, "are not finite (NaN or infinite)"),
        (_changed_weight, "do not match their recorded SHA-256"),
    ],
    ids=[
        "no-config",
        "config-str",
        "config-not-json",
        "extra-list",
        "config-invalid",
        "nan-weight",
        "flipped",
    ],
)
def test_a_damaged_checkpoint_is_one_line_naming_the_file(model, cohort, tmp_path, capsys, edit, expected):
    from amt_core.model.checkpoint import CheckpointError, load_checkpoint

    path = _tampered(model, tmp_path, "bad.pt", edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)
    scan = cohort.parent / "imagesTs" / "TOY003_0000.nii.gz"
    code, err = _cli(
        capsys, "predict", "--model", path, "--input", scan, "--out", tmp_path / "p", "--no-progress"
    )
    assert code == 2 and len(err.splitlines()) == 1 and path in err and expected in err
    assert not (tmp_path / "p").exists()


def test_nan_weights_are_never_saved(tmp_path):
    from amt_core.model.checkpoint import CheckpointError

    cfg = get_config("cpu", patch_size=(16, 16, 16), channels=(4, 8), strides=(2,))
    net = build_network(cfg)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="not written: the weights .* are not finite"):
        save_checkpoint(tmp_path / "best.pt", model=net, cfg=cfg)
    assert not (tmp_path / "best.pt").exists() and not list(tmp_path.iterdir())


def test_non_finite_probabilities_are_refused_naming_model_and_scan(
    model, cohort, tmp_path, monkeypatch, capsys
):
    """A network output that is not finite is never cast to an empty "no tumour" mask."""
    import amt_core.model.inference as inference

    real = inference.predict_volume

    def nan_volume(*args, **kwargs):
        prob = real(*args, **kwargs)
        prob[tuple(s // 2 for s in prob.shape)] = np.nan
        return prob

    monkeypatch.setattr(inference, "predict_volume", nan_volume)
    scan = cohort.parent / "imagesTs" / "TOY003_0000.nii.gz"
    code, err = _cli(
        capsys, "predict", "--model", model, "--input", scan, "--out", tmp_path / "p", "--no-progress"
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert str(model.resolve()) in err and str(scan) in err and "not finite at 1 voxels" in err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "device, expected",
    [
        ("foo", "--device 'foo': not a device"),
        ("cuda", "--device cuda: CUDA is not available"),
        ("meta", "not supported"),
    ],
)
def test_an_unusable_device_is_one_line(model, cohort, tmp_path, capsys, device, expected):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    scan = cohort.parent / "imagesTs" / "TOY003_0000.nii.gz"
    code, err = _cli(
        capsys, "predict", "--model", model, "--input", scan, "--out", tmp_path / "p", "--device", device
    )
    assert code == 2 and len(err.splitlines()) == 1 and expected in err and "Traceback" not in err


def test_a_full_disk_is_one_line_naming_the_file(model, cohort, tmp_path, monkeypatch, capsys):
    """torch.save reports ENOSPC as a RuntimeError, other writers as an OSError: both one line, exit 2."""
    import errno

    from amt_core.model import checkpoint

    def enospc(state, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", enospc)
    cfg = get_config("cpu", patch_size=(16, 16, 16), channels=(4, 8), strides=(2,))
    with pytest.raises(OSError, match="could not write the checkpoint .is the disk full") as info:
        checkpoint.save_checkpoint(tmp_path / "best.pt", model=build_network(cfg), cfg=cfg)
    assert str(tmp_path / "best.pt") in str(info.value) and not list(tmp_path.iterdir())
    monkeypatch.undo()

    import amt_core.model.inference as inference

    def full(out_dir, case_id, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir / f"{case_id}.nii.gz"))

    monkeypatch.setattr(inference, "write_outputs", full)
    scan = cohort.parent / "imagesTs" / "TOY003_0000.nii.gz"
    code, err = _cli(
        capsys, "predict", "--model", model, "--input", scan, "--out", tmp_path / "p", "--no-progress"
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith("TOY003.nii.gz: No space left on device") and err.startswith("amt predict: error: ")
