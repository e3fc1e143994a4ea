# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Figures and tables
#
# Regenerates every figure (vector PDF + 300-dpi PNG) and table (CSV + Markdown) from the saved results alone (no model, no GPU), then writes `RUN/report.md` and `RUN/report.html`. `make figures` runs the same function.

# %% tags=["parameters"]
run_dir: str = '../runs/demo'  # run folder that receives every output (the runner sets it)
cohort_csv: str = ''  # existing case table to use instead of generating a cohort (empty: generate)
figures_dir: str = ''  # where the figures go (empty: RUN/figures)

# %%
# Unknown or invalid parameters are an error here (papermill itself only warns).
from amt_core.pipeline.params import check_parameters

check_parameters("04_figures", globals());

# %%
# Derived values (papermill overrides only the literals above)
from amt_core.layout import RunLayout

layout = RunLayout.of(run_dir, cohort_csv)  # every path of the run folder
out_dir = figures_dir or layout.figures_dir

# %%
#papermill_description=figures
from amt_core.plots import make_all_figures

written = make_all_figures(layout.root, out_dir, tables_dir=layout.tables_dir, cohort_csv=cohort_csv,
                           overwrite=out_dir == layout.figures_dir)  # the run's own: replaced whole
len(written)

# %%
#papermill_description=report
from amt_core.pipeline.report import write_report

write_report(layout.root, cohort_csv)

# %% [markdown]
# ## The figures

# %%
from pathlib import Path

from IPython.display import Image, display

for png in sorted(Path(out_dir).glob("*.png")):
    display(Image(filename=str(png), width=700))

# %% [markdown]
# ## The headline tables

# %%
from IPython.display import Markdown

for name in ("segmentation", "detection"):
    md = layout.tables_dir / f"{name}.md"
    if md.is_file():
        display(Markdown(md.read_text()))

# %% [markdown]
# ## Reporting checklist, failures and limits
# The CLAIM 2024 / TRIPOD+AI checklist (each item linked to the file of this run that answers it), the failure table (numbers match the failure gallery) and what the data cannot tell, as `report.md` states it.

# %%
for name in ("checklist", "failures"):
    md = layout.tables_dir / f"{name}.md"
    if md.is_file():
        display(Markdown(md.read_text()))
report = layout.report_md.read_text()
display(Markdown(report[report.find("## Limits the data impose"):report.find("## Tables")]))
