# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Explore the cases
#
# An interactive browser (JupyterLab): choose split, institution and case; scroll the axial, coronal and sagittal slices; switch the CT window; toggle the reference (green) and prediction (orange) outlines; read the case's candidates with their confidence and IoU and centre the views on one (**Go to**); **Next worst ▸** walks through the cases from the lowest Dice.

# %% tags=["parameters"]
run_dir: str = '../runs/demo'  # run folder that receives every output (the runner sets it)
cohort_csv: str = ''  # existing case table to use instead of generating a cohort (empty: generate)
explore_split: str = 'test'  # split the browser opens on (train|tune|test)
explore_case: str = ''  # case the browser opens on (empty: the worst by Dice)

# %%
# Unknown or invalid parameters are an error here (papermill itself only warns).
from amt_core.pipeline.params import check_parameters

check_parameters("05_explore", globals());

# %%
# Derived values (papermill overrides only the literals above)
from amt_core.layout import RunLayout

layout = RunLayout.of(run_dir, cohort_csv)  # every path of the run folder


# %%
from amt_core.explore import CaseBrowser

browser = CaseBrowser.from_run(layout.root, cohort_csv, split=explore_split, case=explore_case or None)
if not explore_case:
    browser.jump_to_worst()
browser.widget
