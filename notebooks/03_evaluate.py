# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Evaluation
#
# Inference on the tuning and external test splits with the selected checkpoint; per-scan segmentation metrics; lesion-wise detection with both FROC readings; bootstrap CIs (scan-level and institution-cluster); subgroup and institution tables; a mixed model of institution effects; the headline numbers beside the published ones.
#
# Writes `RUN/predictions/{tune,test}/`, `RUN/evaluation/{tune,test}/` and `RUN/analysis/` (and, for a cohort with a real-anatomy test subset, `RUN/evaluation/test_real_anatomy/` and `RUN/predictions/real_backgrounds/`).

# %% tags=["parameters"]
run_dir: str = '../runs/demo'  # run folder that receives every output (the runner sets it)
seed: int = 0  # seed for the cohort, training and bootstrap
seeds: list = []  # a model per seed on the same cohort, e.g. [0, 1, 2]; must hold seed (empty: one model)
cohort_csv: str = ''  # existing case table to use instead of generating a cohort (empty: generate)
n_bootstrap: int = 10000  # bootstrap resamples for every CI and the FROC bands
ci_level: float = 0.95  # confidence level
ci_method: str = 'percentile'  # bootstrap interval (percentile|bca)
min_institution_scans: int = 3  # institutions with fewer scans are pooled in tables
operating_iou: float = 0.5  # IoU hit threshold of the headline operating point
eval_overrides: dict = {}  # EvalConfig fields, e.g. {'hit_criterion': '>'}

# %%
# Unknown or invalid parameters are an error here (papermill itself only warns).
from amt_core.pipeline.params import check_parameters

check_parameters("03_evaluate", globals());

# %%
# Derived values (papermill overrides only the literals above)
from amt_core.data.cases import read_cases
from amt_core.evaluation import EvalConfig
from amt_core.layout import RunLayout

layout = RunLayout.of(run_dir, cohort_csv)  # every path of the run folder
cases = read_cases(layout.cases_csv)
config = EvalConfig(**{"n_bootstrap": n_bootstrap, "ci_level": ci_level, "ci_method": ci_method,
                       "seed": seed, "operating_iou": operating_iou, **eval_overrides})
config

# %% [markdown]
# ## Inference, per-scan metrics and lesion-wise detection
# The selected checkpoint predicts the tuning and test splits; each prediction is scored against the reference. Each output folder of this step is replaced whole when the step re-runs (written beside, then swapped in), so no file of an earlier model is left.

# %%
#papermill_description=predict_and_evaluate
from amt_core.pipeline.steps import predict_and_evaluate

results = predict_and_evaluate(layout, cases, config)  # RUN/predictions/{split}/, RUN/evaluation/{split}/
results["test"].per_case.describe()

# %% [markdown]
# ## Statistics on the external test
# Bootstrap CIs, FROC bands, operating points, subgroups, institutions and the institution mixed model, all saved in `RUN/analysis/`.

# %%
#papermill_description=statistics
from amt_core.atomic import replacing_dir
from amt_core.pipeline.analysis import analyse

with replacing_dir(layout.analysis_dir) as analysis_dir:  # RUN/analysis/ replaced whole
    # the bootstrap settings and the operating IoU are the evaluation's own (results["test"].config)
    analysis = analyse(results["test"], cases, analysis_dir, min_institution_scans=min_institution_scans)
analysis["comparison"]

# %% [markdown]
# ### Training randomness
# The intervals above resample the external-test scans of one trained model. With `seeds: [...]` each other seed's model (02_train) predicts and is evaluated on the external test with the same settings (`RUN/seeds/seed_<k>/`); `RUN/analysis/seed_variance.csv` gives the between-seed mean, SD and range of each headline number beside the primary's bootstrap CI, and `seed_metrics.csv` one row per seed. With one seed the spread is recorded as not estimable and nothing is predicted.

# %%
#papermill_description=seed_variance
from amt_core.pipeline.seeds import seed_variance

seed_spread = seed_variance(layout, cases, config, seeds, seed)
seed_spread["spread"]

# %% [markdown]
# ### The real-anatomy subset on its own
# A cohort built with `real_anatomy: N` holds N external-test scans with tumours inserted into the real chest CT of N distinct patients, never seen in training in any form. Their evaluation alone goes to `RUN/evaluation/test_real_anatomy/` (the external test's evaluation restricted to them), with `tumour_free.csv`: the model on the same patients' CT without an inserted tumour, where every candidate is a false positive (`RUN/predictions/real_backgrounds/`). Without such scans nothing is written.

# %%
#papermill_description=real_anatomy
from amt_core.pipeline.real_anatomy import evaluate_real_anatomy

real = evaluate_real_anatomy(layout, cases, results["test"])  # None: the cohort has no real-anatomy scans
real.per_case[["case_id", "dice", "iou", "tp", "fp"]] if real is not None else "no real-anatomy scan"

# %% [markdown]
# ### Detection operating points (reading B) and CPM (reading A)

# %%
analysis["operating_points"]

# %%
analysis["cpm"]

# %% [markdown]
# ### Subgroups

# %%
analysis["subgroups"].query("metric == 'dice'")

# %% [markdown]
# ### Institutions and the mixed model
# With about 1.4 scans per external institution the random-intercept variance is weakly identified: read the ICC with that caveat.

# %%
analysis["institutions"].query("metric == 'dice'")

# %%
analysis["institution_model"]

# %% [markdown]
# ## Calibration
# Reliability and ECE of lesion confidence and voxel probability on the external test, with scan-bootstrap bands, before and after one temperature fitted on the tuning split (`RUN/analysis/calibration.csv`, `calibration_bins.csv`).

# %%
#papermill_description=calibration
from amt_core.evaluation.calibration import calibration_study

predictions = {split: layout.predictions(split) for split in ("tune", "test")}
calibration = calibration_study(cases, predictions, results, layout.analysis_dir,  # the evaluation's bootstrap
                                n_bootstrap=config.n_bootstrap, seed=config.seed, ci_level=config.ci_level)
calibration["summary"]
