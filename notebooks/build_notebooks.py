"""Write the study notebooks (01..05) from the cell texts below, without outputs.

The parameters cells come from ``amt_core.pipeline.params`` (the single list of parameters), so the
notebooks, the presets and ``papermill --help-notebook`` cannot drift apart; a test checks that the
stored notebooks are exactly what this script writes. Run it after editing a cell here:

    .venv/bin/python notebooks/build_notebooks.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from amt_core.pipeline.params import NOTEBOOK_PARAMETERS, parameters_cell_source

HERE = Path(__file__).resolve().parent
KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def check_cell(name: str) -> str:
    return ("# Unknown or invalid parameters are an error here (papermill itself only warns).\n"
            "from amt_core.pipeline.params import check_parameters\n\n"
            f'check_parameters("{name}", globals());')


LAYOUT = ("from amt_core.pipeline.layout import RunLayout\n\n"
          "layout = RunLayout.of(run_dir, cohort_csv)  # every path of the run folder\n")

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_cohort": [
        ("md", "# 01 · The cohort\n\nBuild the synthetic multi-institution cohort (or import a case table), "
               "validate it (columns, files, duplicate ids, patient and institution leakage between "
               "splits), and describe it: Table 1 per split and a few example scans.\n\n"
               "Writes `RUN/cohort/` (nnU-Net v2 raw layout + `cases.csv`) and `RUN/tables/table1.*`."),
        ("derived", LAYOUT + "layout.root.mkdir(parents=True, exist_ok=True)"),
        ("md", "## Build or import\nThe generator is deterministic from the seed. A re-run of this step "
               "replaces `RUN/cohort/` whole (built beside it, then swapped in), so no case of other settings "
               "is left; cases already generated with the same settings are reused, not rendered again."),
        ("code", "#papermill_description=build_cohort\n"
                 "if cohort_csv:\n"
                 "    cases_csv = layout.cases_csv\n"
                 "else:\n"
                 "    from amt_core.synth.generate import build_cohort\n\n"
                 "    cases_csv = build_cohort(layout.cohort_dir, preset=cohort_preset, n_cases=n_cases, seed=seed,\n"
                 "                             overwrite=True)\n"
                 "cases_csv"),
        ("md", "## Validate\n`read_cases` checks the case table and fails with one message listing every "
               "problem, including a patient in two splits or a test institution seen in training."),
        ("code", "from amt_core.data.cases import read_cases\n\n"
                 "cases = read_cases(cases_csv)\n"
                 "cases.groupby(\"split\").agg(scans=(\"case_id\", \"size\"), "
                 "institutions=(\"institution_id\", \"nunique\"))"),
        ("code", "# the leakage guard's evidence: the external test is institution- and patient-disjoint\n"
                 "dev = set(cases.loc[cases[\"split\"] != \"test\", \"institution_id\"])\n"
                 "test = set(cases.loc[cases[\"split\"] == \"test\", \"institution_id\"])\n"
                 "{\"test institutions\": len(test), \"of them also in train/tune\": len(test & dev),\n"
                 " \"patients in more than one split\": int((cases.groupby(\"patient_id\")[\"split\"].nunique() > 1).sum())}"),
        ("md", "## Table 1"),
        ("code", "from amt_core.plots import TABLES\n"
                 "from amt_core.plots.manuscript import table_one\n"
                 "from amt_core.plots.tables import write_table\n\n"
                 "table1 = table_one(cases)\n"
                 "write_table(table1, layout.tables_dir, \"table1\", title=TABLES[\"table1\"])\n"
                 "table1"),
        ("md", "## Example scans\nOne scan per split first: the axial slice through the tumour's largest "
               "cross-section (mediastinal window), reference outline in green."),
        ("code", "#papermill_description=example_slices\n"
                 "from amt_core.plots.examples import plot_cohort_examples\n"
                 "from amt_core.plots.style import as_image\n\n"
                 "as_image(plot_cohort_examples(cases, n=n_example_slices, seed=seed)) if n_example_slices else None"),
    ],
    "02_train": [
        ("md", "# 02 · Training\n\nTrain the 3D U-Net with a preset on the training split; every few epochs "
               "the model is evaluated on the **tuning split** and the best checkpoint is kept as `best.pt` "
               "(the study's model selection).\n\nWrites `RUN/train/` (`best.pt`, `last.pt`, "
               "`train_log.csv`, `training.json`, `config.json`, `provenance.json`)."),
        ("derived", LAYOUT),
        ("code", "#papermill_description=train\n"
                 "from amt_core.model.train import train\n\n"
                 "# a rerun of this step replaces RUN/train whole (built beside it), unless it resumes it\n"
                 "resume = bool(train_overrides.get(\"resume\", False))\n"
                 "train_dir = train(layout.cases_csv, layout.train_dir, preset=model_preset, seed=seed,\n"
                 "                  **{\"overwrite\": not resume, **train_overrides})\n"
                 "train_dir"),
        ("md", "## Learning curves and model selection"),
        ("code", "import pandas as pd\n\n"
                 "from amt_core.plots.style import as_image\n"
                 "from amt_core.plots.training import plot_learning_curves\n\n"
                 "log = pd.read_csv(layout.train_dir / \"train_log.csv\")\n"
                 "as_image(plot_learning_curves(log))"),
        ("code", "log.tail(10)"),
        ("md", "How training ended: after its configured steps (`complete`), or stopped early by the "
               "`max_minutes` time cap. A stopped run is incomplete: its model is not the seed's result, and a "
               "warning below says so (`--resume` finishes it). The cap never changes the LR schedule."),
        ("code", "from amt_core.model.run_control import check_status\n\n"
                 "check_status(layout.train_dir)"),
    ],
    "03_evaluate": [
        ("md", "# 03 · Evaluation\n\nInference on the tuning and external test splits with the selected "
               "checkpoint; per-scan segmentation metrics; lesion-wise detection with both FROC readings; "
               "bootstrap CIs (scan-level and institution-cluster); subgroup and institution tables; a "
               "mixed model of institution effects; the headline numbers beside the published ones.\n\n"
               "Writes `RUN/predictions/{tune,test}/`, `RUN/evaluation/{tune,test}/` and `RUN/analysis/`."),
        ("derived", "from amt_core.data.cases import read_cases\n"
                    "from amt_core.evaluation import EvalConfig\n"
                    "from amt_core.pipeline.layout import RunLayout\n\n"
                    "layout = RunLayout.of(run_dir, cohort_csv)  # every path of the run folder\n"
                    "cases = read_cases(layout.cases_csv)\n"
                    "config = EvalConfig(**{\"n_boot\": n_bootstrap, \"ci_level\": ci_level, \"ci_method\": ci_method, \"seed\": seed,\n"
                    "                       \"headline_iou\": operating_iou, **eval_overrides})\n"
                    "config"),
        ("md", "## Inference\nEach output folder of this step is replaced whole when the step re-runs "
               "(`overwrite=True`: written beside, then swapped in), so no file of an earlier model is left."),
        ("code", "#papermill_description=predict\n"
                 "from amt_core.model.inference import predict\n\n"
                 "for split in (\"tune\", \"test\"):\n"
                 "    predict(layout.model_path, layout.cases_csv, layout.predictions(split), split=split, overwrite=True)"),
        ("md", "## Per-scan metrics and lesion-wise detection"),
        ("code", "#papermill_description=evaluate\n"
                 "from amt_core.evaluation import evaluate_predictions\n\n"
                 "results = {}\n"
                 "for split in (\"tune\", \"test\"):\n"
                 "    results[split] = evaluate_predictions(cases, layout.predictions(split), split=split, config=config)\n"
                 "    results[split].save(layout.evaluation(split), overwrite=True)\n"
                 "results[\"test\"].per_case.describe()"),
        ("md", "## Statistics on the external test\nBootstrap CIs, FROC bands, operating points, subgroups, "
               "institutions and the institution mixed model, all saved in `RUN/analysis/`."),
        ("code", "#papermill_description=statistics\n"
                 "from amt_core.atomic import replacing_dir\n"
                 "from amt_core.pipeline.analysis import analyse\n\n"
                 "with replacing_dir(layout.analysis_dir) as analysis_dir:  # RUN/analysis/ replaced whole\n"
                 "    analysis = analyse(results[\"test\"], cases, analysis_dir, n_boot=n_bootstrap, level=ci_level,\n"
                 "                       method=ci_method, seed=seed, min_institution_scans=min_institution_scans,\n"
                 "                       operating_iou=operating_iou)\n"
                 "analysis[\"comparison\"]"),
        ("md", "### Detection operating points (reading B) and CPM (reading A)"),
        ("code", "analysis[\"operating_points\"]"),
        ("code", "analysis[\"cpm\"]"),
        ("md", "### Subgroups"),
        ("code", "analysis[\"subgroups\"].query(\"metric == 'dice'\")"),
        ("md", "### Institutions and the mixed model\nWith about 1.4 scans per external institution the "
               "random-intercept variance is weakly identified: read the ICC with that caveat."),
        ("code", "analysis[\"institutions\"].query(\"metric == 'dice'\")"),
        ("code", "analysis[\"institution_model\"]"),
        ("md", "## Calibration\nReliability and ECE of lesion confidence and voxel probability on the external "
               "test, with scan-bootstrap bands, before and after one temperature fitted on the tuning split "
               "(`RUN/analysis/calibration.csv`, `calibration_bins.csv`)."),
        ("code", "#papermill_description=calibration\n"
                 "from amt_core.evaluation.calibration import calibration_study\n\n"
                 "predictions = {split: layout.predictions(split) for split in (\"tune\", \"test\")}\n"
                 "calibration = calibration_study(cases, predictions, results, layout.analysis_dir, n_boot=n_bootstrap,\n"
                 "                                seed=seed, level=ci_level)\n"
                 "calibration[\"summary\"]"),
    ],
    "04_figures": [
        ("md", "# 04 · Figures and tables\n\nRegenerates every figure (vector PDF + 300-dpi PNG) and table "
               "(CSV + Markdown) from the saved results alone (no model, no GPU), then writes "
               "`RUN/report.md` and `RUN/report.html`. `make figures` runs the same function."),
        ("derived", LAYOUT + "out_dir = figures_dir or layout.figures_dir"),
        ("code", "#papermill_description=figures\n"
                 "from amt_core.plots import make_all_figures\n\n"
                 "written = make_all_figures(layout.root, out_dir, tables_dir=layout.tables_dir, cohort_csv=cohort_csv,\n"
                 "                           overwrite=out_dir == layout.figures_dir)  # the run's own: replaced whole\n"
                 "len(written)"),
        ("code", "#papermill_description=report\n"
                 "from amt_core.pipeline.report import write_report\n\n"
                 "write_report(layout.root, cohort_csv)"),
        ("md", "## The figures"),
        ("code", "from pathlib import Path\n\n"
                 "from IPython.display import Image, display\n\n"
                 "for png in sorted(Path(out_dir).glob(\"*.png\")):\n"
                 "    display(Image(filename=str(png), width=700))"),
        ("md", "## The headline tables"),
        ("code", "from IPython.display import Markdown\n\n"
                 "for name in (\"segmentation\", \"detection\"):\n"
                 "    md = layout.tables_dir / f\"{name}.md\"\n"
                 "    if md.is_file():\n"
                 "        display(Markdown(md.read_text()))"),
        ("md", "## Reporting checklist, failures and limits\nThe CLAIM 2024 / TRIPOD+AI checklist (each item "
               "linked to the file of this run that answers it), the failure table (numbers match the failure "
               "gallery) and what the data cannot tell, as `report.md` states it."),
        ("code", "for name in (\"checklist\", \"failures\"):\n"
                 "    md = layout.tables_dir / f\"{name}.md\"\n"
                 "    if md.is_file():\n"
                 "        display(Markdown(md.read_text()))\n"
                 "report = layout.report_md.read_text()\n"
                 "display(Markdown(report[report.find(\"## Limits the data impose\"):report.find(\"## Tables\")]))"),
    ],
    "05_explore": [
        ("md", "# 05 · Explore the cases\n\nAn interactive browser (JupyterLab): choose split, institution "
               "and case; scroll the axial, coronal and sagittal slices; switch the CT window; toggle the "
               "reference (green) and prediction (orange) outlines; read the case's candidates with their "
               "confidence and IoU and centre the views on one (**Go to**); **Next worst ▸** walks through "
               "the cases from the lowest Dice."),
        ("derived", LAYOUT),
        ("code", "from amt_core.explore import CaseBrowser\n\n"
                 "browser = CaseBrowser.from_run(layout.root, cohort_csv, split=explore_split, case=explore_case or None)\n"
                 "if not explore_case:\n"
                 "    browser.jump_to_worst()\n"
                 "browser.widget"),
    ],
}


def build(name: str) -> nbformat.NotebookNode:
    cells = []
    for kind, text in NOTEBOOKS[name]:
        if kind == "md":
            cells.append(new_markdown_cell(text))
        elif kind == "derived":
            if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells):
                cells.append(new_code_cell(parameters_cell_source(name), metadata={"tags": ["parameters"]}))
                cells.append(new_code_cell(check_cell(name)))
            cells.append(new_code_cell("# Derived values (papermill overrides only the literals above)\n" + text))
        else:
            cells.append(new_code_cell(text))
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNEL, "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives identical files
        cell["id"] = f"{name}-{i:02d}"
    return nb


def main(argv: list[str]) -> int:
    names = argv or list(NOTEBOOK_PARAMETERS)
    for name in names:
        nbformat.write(build(name), HERE / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
