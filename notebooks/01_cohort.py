# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The cohort
#
# Build the synthetic multi-institution cohort (or import a case table), validate it (columns, files, duplicate ids, patient and institution leakage between splits), and describe it: Table 1 per split and a few example scans.
#
# Writes `RUN/cohort/` (nnU-Net v2 raw layout + `cases.csv`) and `RUN/tables/table1.*`.

# %% tags=["parameters"]
run_dir: str = '../runs/demo'  # run folder that receives every output (the runner sets it)
seed: int = 0  # seed for the cohort, training and bootstrap
cohort_csv: str = ''  # existing case table to use instead of generating a cohort (empty: generate)
cohort_preset: str = 'demo'  # synthetic resolution preset (tiny|demo|full)
n_cases: int = 711  # cohort size (711: the study design)
real_anatomy: int = 0  # test scans with tumours in the bundled real chest CTs (0-4; ignored with cohort_csv)
n_example_slices: int = 3  # example scans shown in 01_cohort

# %%
# Unknown or invalid parameters are an error here (papermill itself only warns).
from amt_core.pipeline.params import check_parameters

check_parameters("01_cohort", globals());

# %%
# Derived values (papermill overrides only the literals above)
from amt_core.layout import RunLayout

layout = RunLayout.of(run_dir, cohort_csv)  # every path of the run folder
layout.root.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Build or import
# The generator is deterministic from the seed. With `real_anatomy: N` the external test also holds N scans with tumours inserted into real chest CT (the bundled scans of N distinct patients, `amt_core/synth/chest_backgrounds/SOURCES.md`), each patient an institution seen only in the test split; 03_evaluate reports them on their own. A re-run of this step replaces `RUN/cohort/` whole (built beside it, then swapped in), so no case of other settings is left; cases already generated with the same settings are reused, not rendered again.

# %%
#papermill_description=build_cohort
if cohort_csv:
    cases_csv = layout.cases_csv
else:
    from amt_core.synth.generate import build_cohort

    cases_csv = build_cohort(layout.cohort_dir, preset=cohort_preset, n_cases=n_cases, seed=seed,
                             real_anatomy=real_anatomy, overwrite=True)
cases_csv

# %% [markdown]
# ## Validate
# `read_cases` checks the case table and fails with one message listing every problem, including a patient in two splits or a test institution seen in training.

# %%
from amt_core.data.cases import read_cases

cases = read_cases(cases_csv)
cases.groupby("split").agg(scans=("case_id", "size"), institutions=("institution_id", "nunique"))

# %%
# the leakage guard's evidence: the external test is institution- and patient-disjoint
from amt_core.data.cases import leakage_evidence

leakage_evidence(cases)

# %% [markdown]
# ## Table 1

# %%
from amt_core.plots import TABLES
from amt_core.plots.manuscript import table_one
from amt_core.plots.tables import write_table

table1 = table_one(cases)
write_table(table1, layout.tables_dir, "table1", title=TABLES["table1"])
table1

# %% [markdown]
# ## Example scans
# One scan per split first: the axial slice through the tumour's largest cross-section (mediastinal window), reference outline in green.

# %%
#papermill_description=example_slices
from amt_core.plots.examples import plot_cohort_examples
from amt_core.plots.style import as_image

as_image(plot_cohort_examples(cases, n=n_example_slices, seed=seed)) if n_example_slices else None
