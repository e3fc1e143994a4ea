"""The study pipeline end to end: every notebook executed with papermill on the `smoke` preset (once per
session), then its outputs, the skipping of unchanged steps, failure reporting and `amt figures`.

This is the integration test of the whole project (cohort -> training -> evaluation -> figures).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from amt_core.pipeline.params import (
    NOTEBOOKS,
    ParameterError,
    check_parameters,
    load_params,
    notebook_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"


# --- parameters (no notebook executed) ----------------------------------------------------------------
@pytest.mark.parametrize("preset", ["smoke", "quick", "demo", "study"])
def test_presets_are_valid(preset):
    params = load_params(ROOT / "params" / f"{preset}.yaml")
    assert params["model_preset"] in ("cpu", "full")


def test_demo_preset_is_the_study_design():
    params = load_params(ROOT / "params" / "demo.yaml")
    assert params["n_cases"] == 711 and params["cohort_preset"] == "demo" and params["model_preset"] == "cpu"
    # a fixed training length (one seed, one result on any CPU) that fits the 60-minute bar on 2 cores
    # (measured ~0.93 min per 250-step epoch incl. tuning evaluations), with the time cap only as a safety net
    from amt_core.model.presets import RUN_CONTROLS, get_config

    train = params["train_overrides"]
    cfg = get_config("cpu", **{k: v for k, v in train.items() if k not in RUN_CONTROLS})
    assert "max_steps" not in train and cfg.max_epochs * cfg.steps_per_epoch <= 8000
    assert cfg.max_epochs * 0.93 < train["max_minutes"] <= 45


@pytest.mark.parametrize(
    "content, message",
    [
        ({"n_bootstrap": 10, "bogus": 1}, "unknown parameter 'bogus'"),
        ({"n_bootstrap": "many"}, "n_bootstrap must be int"),
        ({"n_bootstrap": 0}, "n_bootstrap must be > 0"),
        ({"n_bootstrap": True}, "n_bootstrap must be int"),
        ({"cohort_preset": "huge"}, "cohort_preset must be one of"),
        ({"ci_level": 1.5}, "ci_level must be in (0, 1)"),
        ({"run_dir": "x"}, "unknown parameter 'run_dir'"),
        # a name that earlier versions used says the name now (issue 14: one name per concept)
        ({"n_boot": 10}, "parameter 'n_boot' is now called 'n_bootstrap'"),
        ({"headline_iou": 0.5}, "parameter 'headline_iou' is now called 'operating_iou'"),
        ({"level": 0.9}, "parameter 'level' is now called 'ci_level'"),
        ({"eval_overrides": {"n_boot": 10}}, "eval_overrides: 'n_boot' is now called 'n_bootstrap'"),
        (
            {"eval_overrides": {"headline_iou": 0.3}},
            "eval_overrides: 'headline_iou' is now called 'operating_iou'",
        ),
        ({"eval_overrides": {"method": "bca"}}, "eval_overrides: 'method' is now called 'ci_method'"),
        ({"eval_overrides": {"treshold": 0.5}}, "eval_overrides: unknown EvalConfig field 'treshold'"),
        (
            {"eval_overrides": {"hit_criterion": "=>"}},
            "eval_overrides: invalid evaluation config: hit_criterion",
        ),
    ],
)
def test_invalid_preset_file_is_an_error(tmp_path, content, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ParameterError) as info:
        load_params(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_run_refuses_an_old_name_naming_the_file_the_old_and_the_new_key(tmp_path, capsys):
    """`amt run` with a params file from before the renames: exit 2, no traceback, nothing written."""
    from amt_core.cli import main

    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"n_cases": 6, "eval_overrides": {"n_boot": 10, "hit_criterion": ">"}}))
    code = main(["run", "--params", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert str(path) in err and "'n_boot' is now called 'n_bootstrap'" in err
    assert not (tmp_path / "run").exists()


def test_missing_preset_file_names_the_presets(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml .*preset name: smoke, demo, study"):
        load_params(tmp_path / "nope.yaml")
    assert load_params("smoke")["n_cases"] == 14  # a preset by name


def test_check_parameters_reports_every_problem():
    ns = {
        "run_dir": "r",
        "cohort_csv": "",
        "figures_dir": 3,
        "extra": 1,
        "np": __import__("numpy"),
        "In": [],
        "_": None,
        "helper": print,
    }
    with pytest.raises(ParameterError) as info:
        check_parameters("04_figures", ns)
    text = str(info.value)
    assert "unknown parameter 'extra'" in text and "figures_dir must be str" in text
    assert "'np'" not in text and "helper" not in text
    fixed = {k: v for k, v in ns.items() if k != "extra"} | {"figures_dir": ""}
    assert check_parameters("04_figures", fixed) == {"run_dir": "r", "cohort_csv": "", "figures_dir": ""}


def test_check_parameters_reads_the_parameter_cells_from_ipython_history():
    params_cell = "run_dir: str = 'r'  # help\ncohort_csv: str = ''\nfigures_dir: str = ''"
    injected = '# Parameters\nrun_dir = "/abs/run"\nbogus = 3\n'
    ns = {
        "run_dir": "/abs/run",
        "cohort_csv": "",
        "figures_dir": "",
        "bogus": 3,
        "In": ["", params_cell, injected, "check_parameters(...)"],
    }
    with pytest.raises(ParameterError, match="unknown parameter 'bogus'"):
        check_parameters("04_figures", ns)
    # rerun interactively: later cells' variables (a list, a dict, a str) are not parameters
    later = {
        "run_dir": "r",
        "cohort_csv": "",
        "figures_dir": "",
        "written": [1],
        "results": {},
        "out_dir": "x",
        "In": ["", params_cell, "layout = 1", "written = [1]", params_cell, "check_parameters(...)"],
    }
    assert set(check_parameters("04_figures", later)) == {"run_dir", "cohort_csv", "figures_dir"}


def test_each_notebook_gets_only_its_parameters(tmp_path):
    params = load_params(SMOKE)
    p = notebook_parameters("02_train", params, tmp_path)
    assert set(p) == {"run_dir", "seed", "model_preset", "train_overrides"} | ({"cohort_csv"} & set(params))
    assert p["run_dir"] == str(tmp_path.resolve())


def test_cli_lists_run_and_figures():
    out = subprocess.run(
        [sys.executable, "-m", "amt_core.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "run" in out and "figures" in out


# --- the smoke pipeline, once per session ---------------------------------------------------------------
@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    from amt_core.pipeline.run import run_pipeline

    run = tmp_path_factory.mktemp("smoke") / "run"
    t0 = time.perf_counter()
    output = io.StringIO()
    with contextlib.redirect_stdout(output):  # what `amt run` prints when stdout is not a terminal
        status = run_pipeline(SMOKE, run, progress=True)
    return {"dir": run, "status": status, "seconds": time.perf_counter() - t0, "output": output.getvalue()}


def test_run_output_shows_the_cells_and_each_epoch_with_an_eta(smoke_run):
    """Issue 12 §3: the labelled cells as lines (papermill's cell bar steps aside) and training's epochs from
    the kernel's progress file, one line per update, none redrawn in place."""
    text = smoke_run["output"]
    lines = text.splitlines()
    assert "[1/5] 01_cohort: build_cohort" in lines and "[2/5] 02_train: train" in lines
    epochs = {ln.split(",")[0].strip() for ln in lines if ln.startswith("  train: epoch ") and "ETA" in ln}
    assert {"train: epoch 1/2", "train: epoch 2/2"} <= epochs
    assert any(ln.startswith("  train: epoch 2/2, 4/4 steps (100%)") and "tune Dice" in ln for ln in lines)
    assert "\r" not in text and "Executing" not in text
    assert (smoke_run["dir"] / ".steps" / "02_train.progress.jsonl").stat().st_size > 0


def test_every_step_ran_and_left_an_executed_notebook(smoke_run):
    run = smoke_run["dir"]
    assert smoke_run["status"] == {nb: "ran" for nb in NOTEBOOKS}
    for nb in NOTEBOOKS:
        executed = nbformat.read(run / "notebooks" / f"{nb}.ipynb", as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
        errors = [
            o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
        ]
        assert not errors, f"{nb}: {errors[0]['ename']}" if errors else ""
        assert (run / "notebooks" / f"{nb}.html").stat().st_size > 10_000
        if nb in ("01_cohort", "02_train", "04_figures"):  # figures are shown, not just '<Figure ...>'
            assert any(
                "image/png" in o.get("data", {})
                for c in executed.cells
                if c.cell_type == "code"
                for o in c.outputs
            ), f"{nb} shows no image"
        assert json.loads((run / ".steps" / f"{nb}.json").read_text())["outputs"]


def test_html_export_opens_with_contents_and_provenance(smoke_run):
    import re
    from html.parser import HTMLParser

    run = smoke_run["dir"]
    html = (run / "notebooks" / "03_evaluate.html").read_text()

    class Anchors(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.toc, self.in_toc = set(), [], False

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.ids.add(a.get("id"))
            self.in_toc |= tag == "nav" and "amt-toc" in (a.get("class") or "")
            if self.in_toc and tag == "a":
                self.toc.append(a["href"])

        def handle_endtag(self, tag):
            self.in_toc &= tag != "nav"

    parser = Anchors()
    parser.feed(html)
    # the contents come first and list the notebook's headings; every link resolves to an anchor of the page
    assert (
        html.index('class="amt-toc"')
        < html.index('class="amt-provenance"')
        < html.index('<div class="jp-Cell')
    )
    assert len(parser.toc) >= 5 and all(h.startswith("#") and h[1:] in parser.ids for h in parser.toc), (
        parser.toc
    )
    assert any("Statistics-on-the-external-test" in h for h in parser.toc)
    # provenance: the run's commit and seed, this notebook's parameters, package versions
    prov = json.loads((run / "provenance.json").read_text())
    front = html[html.index('class="amt-provenance"') : html.index('<div class="jp-Cell')]
    assert str(prov["git_commit"] or "unknown") in front
    seed = load_params(SMOKE).get("seed", 0)
    assert re.search(rf"<th>seed</th><td><code>{seed}</code>", front)
    assert "n_bootstrap = 200" in front and f"monai {prov['versions']['monai']}" in front
    assert "data:image/png;base64" in (run / "notebooks" / "04_figures.html").read_text()  # figures inline


def test_cohort_and_model_outputs(smoke_run):
    run = smoke_run["dir"]
    cases = pd.read_csv(run / "cohort" / "cases.csv")
    params = load_params(SMOKE)
    assert len(cases) == params["n_cases"] + params.get("real_anatomy", 0)  # + the real-anatomy test scans
    assert set(cases["split"]) == {"train", "tune", "test"}
    assert (run / "train" / "best.pt").stat().st_size > 0
    assert (run / "tables" / "table1.md").read_text().count("|") > 20


def test_evaluation_values_are_sane(smoke_run):
    run = smoke_run["dir"]
    cases = pd.read_csv(run / "cohort" / "cases.csv")
    for split in ("tune", "test"):
        pc = pd.read_csv(run / "evaluation" / split / "per_case.csv")
        assert sorted(pc["case_id"]) == sorted(cases.loc[cases["split"] == split, "case_id"])
        # each scan's overlap metrics agree with its voxel counts (the empty-scan policy aside)
        ref, pred, both = (pc[c].to_numpy(float) for c in ("ref_voxels", "pred_voxels", "overlap_voxels"))
        some = ref + pred > 0
        assert np.allclose(pc["dice"][some], (2 * both / (ref + pred))[some])
        assert np.allclose(pc["iou"][some], (both / (ref + pred - both))[some])
        assert ref.sum() > 0 and (both <= np.minimum(ref, pred)).all()
        assert (run / "predictions" / split).is_dir()
    ci = pd.read_csv(run / "analysis" / "seg_ci.csv").set_index("metric")
    assert (ci["ci_lo"] <= ci["mean"] + 1e-12).all() and (ci["mean"] <= ci["ci_hi"] + 1e-12).all()
    ops = pd.read_csv(run / "analysis" / "operating_points.csv")
    # the headline operating point is the lesion table's hit rate and the scans' false positives
    head = ops[np.isclose(ops["iou_threshold"], 0.5)].iloc[0]
    lesions = pd.read_csv(run / "evaluation" / "test" / "lesions.csv")
    test_pc = pd.read_csv(run / "evaluation" / "test" / "per_case.csv")
    assert head["sensitivity"] == pytest.approx(lesions["hit"].mean())
    assert head["fp_per_scan"] == pytest.approx(test_pc["fp"].sum() / len(test_pc))
    assert len(ops) == 19
    analysis = json.loads((run / "analysis" / "analysis.json").read_text())
    assert analysis["n_bootstrap"] == 200
    # the smoke test split comes from fewer than 10 institutions: no institution-cluster interval
    cluster = pd.read_csv(run / "analysis" / "seg_ci_cluster.csv")
    assert analysis["institution_cluster_bootstrap"]["estimable"] is False
    assert cluster["ci_lo"].isna().all() and cluster["note"].str.contains("not estimable").all()
    assert "**Institution-cluster bootstrap: not estimable" in (run / "report.md").read_text()


def test_every_figure_and_table_is_there(smoke_run):
    from amt_core.plots import FIGURES, TABLES

    run = smoke_run["dir"]
    for stem in FIGURES:
        for ext in ("pdf", "png"):
            assert (run / "figures" / f"{stem}.{ext}").stat().st_size > 5_000, f"{stem}.{ext}"
    for stem in TABLES:
        assert (run / "tables" / f"{stem}.csv").is_file() and (run / "tables" / f"{stem}.md").is_file()
    seg = pd.read_csv(run / "tables" / "segmentation.csv")
    assert list(seg["published"]) == [0.82, 0.72, 0.85, 0.82]


def test_report_has_tables_figures_conventions_and_provenance(smoke_run):
    run = smoke_run["dir"]
    report = (run / "report.md").read_text()
    for needle in (
        "## Tables",
        "## Figures",
        "## Conventions",
        "## Provenance",
        "**empty scans**",
        "bootstrap",
        "hit_criterion",
        "assignment",
        "git commit",
        "Package versions",
        "Input hashes",
        "n_bootstrap",
        "figures/froc_iou.png",
        "0.82",
    ):
        assert needle in report, needle
    for png in [line.split("(")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        assert (run / png).is_file()
    # issue 13: the checklist, the reviewer's statistics, the data's limits, the flow and failure figures
    for needle in (
        "## Reporting checklist",
        "## Subgroup tests and institution effects",
        "Holm",
        "## Limits the data impose",
        "external-test scans hold a tumour",
        "synthetic",
        "figures/flow.png",
        "figures/failures.png",
        "tables/checklist.md",
        "ICC",
    ):
        assert needle in report, needle
    from amt_core.pipeline.checklist import links, slug

    headings = {slug(line.lstrip("#")) for line in report.splitlines() if line.startswith("## ")}
    checklist = run / "tables" / "checklist.md"
    # the checklist's links are relative to tables/, the report's to the run folder
    pairs = [(checklist.parent, t) for t in links(checklist.read_text())] + [(run, t) for t in links(report)]
    for base, target in pairs:
        path, _, anchor = target.partition("#")
        assert (base / path).resolve().is_file(), target
        assert not anchor or anchor in headings, target
    rows = [line.split("|")[-3:-1] for line in (run / "tables" / "subgroups.md").read_text().splitlines()[4:]]
    assert rows and all(cell.strip() != "0.000" for row in rows for cell in row)  # raw and Holm p-values
    html = (run / "report.html").read_text()
    assert "<table>" in html and "<img" in html
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["config"]["params"]["n_bootstrap"] == 200 and prov["versions"]["papermill"]
    assert any(k.endswith("smoke.yaml") for k in prov["input_hashes"])
    # the steps table names each step (not its notebook's hash), lists no other .steps file, and says that
    # the report is written in 04 (whose record, like 05's, is not there yet)
    table = report.split("Pipeline steps (from `.steps/`):")[1].strip().split("\n\n")[0].splitlines()[2:]
    assert [row.split("|")[1].strip() for row in table] == list(NOTEBOOKS)
    assert "this step (writes this report)" in table[3] and "runs after this report" in table[4]
    assert all(row.split("|")[2].strip().startswith("20") for row in table[:3])  # finished: a date


@contextlib.contextmanager
def _hashed_files():
    """The files whose bytes are hashed inside the block (every content hash goes through file_hash)."""
    import amt_core.atomic as atomic

    seen: list[Path] = []
    real = atomic.file_hash

    def counting(path, *args, **kwargs):
        seen.append(Path(path).resolve())
        return real(path, *args, **kwargs)

    atomic.file_hash = counting
    try:
        yield seen
    finally:
        atomic.file_hash = real


def test_real_anatomy_subset_is_reported_on_its_own(smoke_run):
    """issue 15: the smoke cohort's real-anatomy scan, evaluated alone, in its table and report section."""
    from amt_core.data.cases import read_cases
    from amt_core.evaluation import EvaluationResult, evaluate_predictions

    run = smoke_run["dir"]
    n = load_params(SMOKE)["real_anatomy"]
    cases = pd.read_csv(run / "cohort" / "cases.csv")
    real = cases[cases["anatomy"] == "real"]
    assert len(real) == n and set(real["split"]) == {"test"}
    saved = EvaluationResult.load(run / "evaluation" / "test_real_anatomy")
    again = evaluate_predictions(
        read_cases(run / "cohort" / "cases.csv").query("anatomy == 'real'"),
        run / "predictions" / "test",
        config=saved.config,
        progress=False,
    )
    pd.testing.assert_frame_equal(saved.per_case, again.per_case)
    assert len(saved.tables["tumour_free"]) == n
    table = pd.read_csv(run / "tables" / "real_anatomy.csv")
    assert len(table) == n + 1 and list(table["case_id"][:n]) == list(real["case_id"])
    report = (run / "report.md").read_text()
    assert "## Real anatomy" in report and f"real chest CT of {n} distinct real patient" in report


def test_rerun_skips_every_step(smoke_run):
    from amt_core.pipeline.run import run_pipeline

    with _hashed_files() as hashed:
        status = run_pipeline(SMOKE, smoke_run["dir"], progress=False)
    assert status == {nb: "skipped" for nb in NOTEBOOKS}
    # the cohort's volumes were not read again: their hashes come from the cache (path, size, mtime)
    assert not [f for f in hashed if f.name.endswith(".nii.gz") and "cohort" in f.parts], hashed


def test_figures_regenerate_from_saved_results(smoke_run, tmp_path):
    exe = Path(sys.executable).with_name("amt")
    subprocess.run(
        [str(exe), "figures", "--run", str(smoke_run["dir"]), "--out", str(tmp_path / "figs")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    from amt_core.plots import FIGURES

    assert {p.stem for p in (tmp_path / "figs").glob("*.png")} == set(FIGURES)
    assert (tmp_path / "figs" / "tables" / "segmentation.md").is_file()
    # the reporting checklist comes along: every link resolves from where it lies, figures and tables to
    # this folder's copies, the rest (cohort, training log, report) to the run
    from amt_core.pipeline.checklist import links

    md = tmp_path / "figs" / "tables" / "checklist.md"
    targets = {t.split("#")[0]: (md.parent / t.split("#")[0]).resolve() for t in links(md.read_text())}
    assert targets and all(p.is_file() for p in targets.values()), targets
    figs, run = (tmp_path / "figs").resolve(), smoke_run["dir"].resolve()
    assert any(p.suffix == ".png" for p in targets.values())
    for p in targets.values():
        assert (
            p.is_relative_to(figs) if p.suffix == ".png" else p.is_relative_to(figs) or p.is_relative_to(run)
        )
    assert any(p.is_relative_to(run) for p in targets.values())


def test_explorer_on_the_smoke_run(smoke_run):

    from amt_core.explore import CaseBrowser

    b = CaseBrowser.from_run(smoke_run["dir"], split="test")
    worst = b.jump_to_worst()
    first = b.render("axial").copy()
    b.sliders["axial"].value = max(0, b.sliders["axial"].value - 3)
    assert not np.array_equal(b.render("axial"), first)
    assert b.case.value == worst and len(b.case.options) >= 1


@pytest.fixture
def run_copy(smoke_run, tmp_path):
    """A private copy of the smoke run (tests that change it must not touch the shared one)."""
    copy = tmp_path / "run"
    shutil.copytree(smoke_run["dir"], copy)
    return copy


def _hashes(folder: Path) -> dict[str, str]:
    from amt_core.atomic import file_hash

    return {str(p.relative_to(folder)): file_hash(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failing_cell_names_notebook_cell_and_error_and_keeps_earlier_results(run_copy, tmp_path):
    from amt_core.pipeline.run import StepError, run_pipeline

    params = load_params(SMOKE) | {"explore_case": "NO-SUCH-CASE"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    earlier = {d: _hashes(run_copy / d) for d in ("cohort", "train", "evaluation", "analysis", "figures")}
    with pytest.raises(StepError) as info:
        run_pipeline(bad, run_copy, progress=False)
    msg = str(info.value)
    assert info.value.notebook == "05_explore"
    assert "05_explore failed in cell" in msg and "KeyError" in msg and "NO-SUCH-CASE" in msg
    executed = nbformat.read(run_copy / "notebooks" / "05_explore.ipynb", as_version=4)
    assert any(o.output_type == "error" for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert not (run_copy / ".steps" / "05_explore.json").exists()
    assert {d: _hashes(run_copy / d) for d in earlier} == earlier
    # fixing the parameter reruns only the failed step
    status = run_pipeline(SMOKE, run_copy, progress=False)
    assert status == {**{nb: "skipped" for nb in NOTEBOOKS[:4]}, "05_explore": "ran"}


def test_changed_parameter_reruns_its_step_and_the_ones_after(run_copy, tmp_path):
    from amt_core.pipeline.run import run_pipeline

    params = load_params(SMOKE) | {"figures_dir": str(tmp_path / "elsewhere")}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(params))
    status = run_pipeline(changed, run_copy, progress=False)
    assert status == {
        "01_cohort": "skipped",
        "02_train": "skipped",
        "03_evaluate": "skipped",
        "04_figures": "ran",
        "05_explore": "ran",
    }
    assert (tmp_path / "elsewhere" / "froc_iou.png").is_file()


def test_changed_code_reruns_the_steps_and_says_why(run_copy, monkeypatch, capsys):
    """Each step's key holds the fingerprint of amt's sources: a run with other code (here another
    fingerprint: an upgraded amt, an edited amt_core module) re-runs the step asked for, says why, and leaves
    the steps left out marked as holding outputs of the earlier code."""
    import amt_core.pipeline.run as run
    from amt_core.provenance import code_fingerprint, result_versions

    manifest = run_copy / ".steps" / "05_explore.json"
    recorded = json.loads(manifest.read_text())
    assert recorded["code"] == code_fingerprint() and recorded["libraries"] == result_versions()
    monkeypatch.setattr(run, "code_fingerprint", lambda: "0" * 64)
    status = run.run_pipeline(SMOKE, run_copy, progress=True, steps=["05_explore"])
    assert status == {**{nb: "skipped" for nb in NOTEBOOKS[:4]}, "05_explore": "ran"}
    lines = capsys.readouterr().out.splitlines()
    assert "[1/5] 01_cohort: skipped (not asked for; out of date: the amt code changed)" in lines
    assert "[5/5] 05_explore: running (the amt code changed, an earlier step changed) ..." in lines
    assert json.loads(manifest.read_text())["code"] == "0" * 64
    assert run.incomplete_run(run_copy)["left_out"] == list(NOTEBOOKS[:4])


def test_a_rerun_says_which_library_versions_changed(tmp_path):
    """The manifest records the library versions; a step whose key differs in them names each one."""
    from amt_core.layout import RunLayout
    from amt_core.pipeline.hashes import FileHashes
    from amt_core.pipeline.run import _rerun_reason

    parts = {"code": "c", "libraries": {"numpy": "2.0", "torch": "2.5"}, "notebook": "n", "params": {}}
    manifest = tmp_path / "02_train.json"
    manifest.write_text(json.dumps({"key": "old", **parts, "libraries": {"numpy": "1.26", "torch": "2.5"}}))
    reason = _rerun_reason(manifest, "new", parts, RunLayout.of(tmp_path), FileHashes())
    assert reason == "library versions changed (numpy 1.26 -> 2.0)"
    assert _rerun_reason(tmp_path / "none.json", "new", parts, RunLayout.of(tmp_path), FileHashes()) == ""


def test_a_damaged_output_reruns_its_step(run_copy):
    from amt_core.pipeline.run import run_pipeline

    (run_copy / "report.md").write_text("edited by hand")
    status = run_pipeline(SMOKE, run_copy, progress=False, steps=["04_figures"])
    assert status["04_figures"] == "ran" and status["03_evaluate"] == "skipped"
    assert "## Conventions" in (run_copy / "report.md").read_text()


def test_a_changed_volume_of_an_imported_cohort_reruns_the_steps_that_read_it(
    smoke_run, tmp_path, monkeypatch
):
    """The step key covers every image and label of the case table, not just cases.csv. The params file
    names the cohort relative to itself (as docs/real-data.md does): the run, and `amt figures` after it from
    any folder, find it there."""
    import nibabel as nib

    from amt_core.atomic import file_hash
    from amt_core.pipeline.run import run_pipeline
    from amt_core.plots.manuscript import recorded_cohort_csv

    imported = tmp_path / "imported"
    shutil.copytree(smoke_run["dir"] / "cohort", imported)
    params = tmp_path / "imported.yaml"
    params.write_text(
        yaml.safe_dump(load_params(SMOKE) | {"cohort_csv": "imported/cases.csv", "n_example_slices": 0})
    )
    run = tmp_path / "run"
    assert run_pipeline(params, run, progress=False) == {nb: "ran" for nb in NOTEBOOKS}
    hashes = json.loads((run / "provenance.json").read_text())["input_hashes"]  # the cohort's files too
    first = pd.read_csv(imported / "cases.csv").iloc[0]
    for f in (imported / "cases.csv", imported / first["image"], imported / first["label"]):
        assert hashes[str(f.resolve())] == file_hash(f)
    monkeypatch.chdir(tmp_path / "run" / "evaluation")  # where imported/cases.csv is not
    assert recorded_cohort_csv(run) == str((imported / "cases.csv").resolve())
    prov = json.loads((run / "provenance.json").read_text())
    bare = {**prov, "config": {"params_file": prov["config"]["params_file"]}}  # params.yaml's relative path
    (run / "provenance.json").write_text(json.dumps(bare))
    assert recorded_cohort_csv(run) == str((imported / "cases.csv").resolve())
    (run / "provenance.json").write_text(json.dumps(prov))
    cases = pd.read_csv(imported / "cases.csv")
    case = cases[cases["split"] == "test"].iloc[0]
    before = pd.read_csv(run / "evaluation" / "test" / "per_case.csv").set_index("case_id")
    # a corrected reference mask: same table, same file name, other voxels
    img = nib.load(imported / case["label"])
    label = np.asarray(img.dataobj).copy()
    zs = np.nonzero(label.any(axis=(0, 1)))[0]
    label[:, :, zs[: max(1, len(zs) // 2)]] = 0
    nib.save(nib.Nifti1Image(label, img.affine, img.header), imported / case["label"])
    assert run_pipeline(params, run, progress=False) == {nb: "ran" for nb in NOTEBOOKS}
    after = pd.read_csv(run / "evaluation" / "test" / "per_case.csv").set_index("case_id")
    assert after.loc[case["case_id"], "ref_voxels"] < before.loc[case["case_id"], "ref_voxels"]
    with _hashed_files() as hashed:
        assert run_pipeline(params, run, progress=False) == {nb: "skipped" for nb in NOTEBOOKS}
    assert not [f for f in hashed if f.is_relative_to(imported)], hashed  # cached by path, size and mtime
    assert json.loads((run / ".steps" / "hashes.json").read_text())


def test_a_step_that_reruns_replaces_its_outputs_whole(run_copy, tmp_path):
    """Outputs of a run made with other parameters (here: planted files) do not survive a re-run step."""
    from amt_core.pipeline.run import run_pipeline

    ghosts = [
        run_copy / "predictions" / "test" / "GHOST.nii.gz",
        run_copy / "predictions" / "tune" / "x.csv",
        run_copy / "evaluation" / "test" / "subgroups_old.csv",
        run_copy / "analysis" / "old.csv",
    ]
    for ghost in ghosts:
        ghost.write_text("written by a run with other parameters")
    status = run_pipeline(SMOKE, run_copy, progress=False, steps=["03_evaluate"], force=True)
    assert status["03_evaluate"] == "ran"
    assert [g for g in ghosts if g.exists()] == []
    assert (run_copy / "predictions" / "test" / "predictions.json").is_file()
    # fewer cases: the cohort folder is replaced whole, no case of the 14-case cohort is left
    fewer = tmp_path / "fewer.yaml"
    fewer.write_text(yaml.safe_dump(load_params(SMOKE) | {"n_cases": 12}))
    assert run_pipeline(fewer, run_copy, progress=False, steps=["01_cohort"])["01_cohort"] == "ran"
    cohort = run_copy / "cohort"
    cases = pd.read_csv(cohort / "cases.csv")
    on_disk = {
        p.relative_to(cohort).as_posix()
        for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
        for p in (cohort / d).glob("*")
    }
    n_real = load_params(SMOKE).get("real_anatomy", 0)  # the real-anatomy test scans come on top of n_cases
    assert len(cases) == 12 + n_real and on_disk == {*cases["image"], *cases["label"]}


def test_figures_replace_a_folder_of_figures_and_refuse_any_other(smoke_run, tmp_path, capsys):
    from amt_core.cli import main
    from amt_core.plots import FIGURES

    run = smoke_run["dir"]
    figs = (
        tmp_path / "figs"
    )  # a figures folder of another run, with its README (as the repository's figures/)
    (figs / "tables").mkdir(parents=True)
    (figs / "README.md").write_text("about these figures")
    (figs / "figures.json").write_text(
        json.dumps({"run": "/elsewhere/other-run", "files": ["old_figure.png", "tables/old.csv"]})
    )
    (figs / "old_figure.png").write_bytes(b"a figure of another run")
    (figs / "tables" / "old.csv").write_text("a table of another run")
    assert main(["figures", "--run", str(run), "--out", str(figs)]) == 0
    said = capsys.readouterr().out
    assert not (figs / "old_figure.png").exists() and not (figs / "tables" / "old.csv").exists()
    assert "replacing the figures of /elsewhere/other-run" in said
    assert (figs / "README.md").read_text() == "about these figures"
    assert {p.stem for p in figs.glob("*.png")} == set(FIGURES)
    assert json.loads((figs / "figures.json").read_text())["run"] == str(run.resolve())
    # any other folder is refused, byte-identical, unless --overwrite (then replaced whole)
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "draft.docx").write_text("the manuscript")
    before = _hashes(paper)
    assert main(["figures", "--run", str(run), "--out", str(paper)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(paper) in err and "not a folder of figures" in err, err
    assert _hashes(paper) == before
    assert main(["figures", "--run", str(run), "--out", str(paper), "--overwrite"]) == 0
    assert not (paper / "draft.docx").exists() and (paper / "figures.json").is_file()


def test_latest_run_is_the_last_evaluated_one(tmp_path, monkeypatch, capsys):
    import json

    from amt_core.layout import latest_run

    with pytest.raises(FileNotFoundError, match="no finished run in"):
        latest_run(tmp_path)
    for name, finished in (
        ("old", "2026-01-02T00:00:00+00:00"),
        ("new", "2026-03-01T00:00:00+00:00"),
        ("broken", None),
        ("unevaluated", None),
    ):
        steps = tmp_path / name / ".steps"
        steps.mkdir(parents=True)
        if name == "broken":
            (steps / "03_evaluate.json").write_text("{not json")
        elif finished:
            (steps / "03_evaluate.json").write_text(json.dumps({"finished": finished}))
        (steps / "01_cohort.json").write_text(json.dumps({"finished": "2027-01-01T00:00:00+00:00"}))
    assert latest_run(tmp_path) == tmp_path / "new"

    # `amt figures` without --run reads runs/ of the working directory and names the problem when empty
    from amt_core.cli import main

    monkeypatch.chdir(tmp_path / "unevaluated")
    assert main(["figures", "--out", str(tmp_path / "figs")]) == 2
    assert "no finished run in runs/" in capsys.readouterr().err
    assert not (tmp_path / "figs").exists()


def test_real_anatomy_backgrounds_are_inputs_of_the_evaluation_step(tmp_path):
    """A changed background CT of a real-anatomy test scan re-runs 03_evaluate: the step's inputs hold the
    background of each such scan and its folder's backgrounds.csv; a cohort without the subset adds none."""
    from amt_core.layout import RunLayout
    from amt_core.pipeline.run import _real_backgrounds
    from amt_core.synth.hybrid import bundled_backgrounds

    layout = RunLayout.of(tmp_path / "run")
    layout.cohort_dir.mkdir(parents=True)
    rows = {"case_id": ["A", "B"], "split": ["test", "train"], "patient_id": ["Lung_Dx-A0002", "P2"]}
    pd.DataFrame(rows).to_csv(layout.cases_csv, index=False)
    assert _real_backgrounds(layout) == []  # no anatomy column
    pd.DataFrame({**rows, "anatomy": ["real", "synthetic"]}).to_csv(layout.cases_csv, index=False)
    found = sorted(p.name for p in _real_backgrounds(layout))
    assert found == ["backgrounds.csv", "lung_dx_a0002.nii.gz"]
    assert all(p.parent == bundled_backgrounds() for p in _real_backgrounds(layout))


def test_bundled_backgrounds_are_keyed_by_their_path_in_the_package(tmp_path):
    """A bundled chest CT enters a step's key as amt_core/synth/..., never by the checkout's absolute path:
    a moved or re-cloned checkout (or an installed wheel) re-runs nothing. 01_cohort of a generated cohort
    reads the bundle too (it paints the real-anatomy scans into it)."""
    from amt_core.layout import RunLayout
    from amt_core.pipeline.hashes import FileHashes
    from amt_core.pipeline.run import STEPS, _step_key, code_parts
    from amt_core.provenance import PACKAGE_DIR
    from amt_core.synth.hybrid import bundled_backgrounds

    layout = RunLayout.of(tmp_path / "run")
    layout.cohort_dir.mkdir(parents=True)
    rows = {"case_id": ["A"], "split": ["test"], "patient_id": ["Lung_Dx-A0002"], "anatomy": ["real"]}
    pd.DataFrame(rows).to_csv(layout.cases_csv, index=False)
    bundle = "amt_core/synth/chest_backgrounds/"
    cohort, evaluate = (
        _step_key(step, layout, {}, "", FileHashes(), code_parts())[1]["inputs"]
        for step in (STEPS[0], STEPS[2])
    )
    assert str(PACKAGE_DIR) not in json.dumps([cohort, evaluate])
    assert {bundle + "lung_dx_a0002.nii.gz", bundle + "backgrounds.csv"} <= set(evaluate)
    scans = sorted(bundle + p.name for p in bundled_backgrounds().glob("*.nii.gz"))
    assert list(cohort) == [*scans, bundle + "backgrounds.csv"] and len(scans) == 4


def test_amt_run_ends_with_a_warning_when_the_training_is_incomplete(tmp_path):
    """`amt run` finishes with one warning line (the report's note, with how to finish it in a run folder)
    when train/training.json says the time cap stopped the training; none for a complete one or none at all."""
    from amt_core.pipeline.run import incomplete_training_warning

    assert incomplete_training_warning(tmp_path) is None  # no training yet
    (tmp_path / "train").mkdir()
    status = {
        "complete": False,
        "stopped_by": "time cap",
        "steps": 150,
        "configured_steps": 600,
        "max_minutes": 8,
    }
    (tmp_path / "train" / "training.json").write_text(json.dumps(status))
    line = incomplete_training_warning(tmp_path)
    assert line.startswith("amt run: warning: incomplete training (train/training.json): ")
    assert "stopped by the time cap (max_minutes 8) after 150 of 600 configured steps" in line
    assert "`resume: true`" in line and "`max_minutes`" in line and "\n" not in line
    (tmp_path / "train" / "training.json").write_text(json.dumps({**status, "complete": True, "steps": 600}))
    assert incomplete_training_warning(tmp_path) is None
