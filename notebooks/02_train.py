# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Training
#
# Train the 3D U-Net with a preset on the training split; every few epochs the model is evaluated on the **tuning split** and the best checkpoint is kept as `best.pt` (the study's model selection).
#
# Writes `RUN/train/` (`best.pt`, `last.pt`, `train_log.csv`, `training.json`, `config.json`, `provenance.json`).

# %% tags=["parameters"]
run_dir: str = '../runs/demo'  # run folder that receives every output (the runner sets it)
seed: int = 0  # seed for the cohort, training and bootstrap
seeds: list = []  # a model per seed on the same cohort, e.g. [0, 1, 2]; must hold seed (empty: one model)
cohort_csv: str = ''  # existing case table to use instead of generating a cohort (empty: generate)
model_preset: str = 'cpu'  # model preset (cpu|full)
train_overrides: dict = {}  # keyword overrides for amt_core.model.train, e.g. {'max_steps': 20}

# %%
# Unknown or invalid parameters are an error here (papermill itself only warns).
from amt_core.pipeline.params import check_parameters

check_parameters("02_train", globals());

# %%
# Derived values (papermill overrides only the literals above)
from amt_core.layout import RunLayout

layout = RunLayout.of(run_dir, cohort_csv)  # every path of the run folder


# %%
#papermill_description=train
from amt_core.model.train import train

# a rerun of this step replaces RUN/train whole (built beside it), unless it resumes it
resume = bool(train_overrides.get("resume", False))
train_dir = train(layout.cases_csv, layout.train_dir, preset=model_preset, seed=seed,
                  **{"overwrite": not resume, **train_overrides})
train_dir

# %% [markdown]
# ## Other seeds (training randomness)
# With `seeds: [0, 1, 2]` the same model is trained once per other seed on the same cohort, with the same preset and overrides, into `RUN/seeds/seed_<k>/train/`; the `seed` model above stays the run's model. 03_evaluate reports the spread between them beside the bootstrap CIs. With one seed this cell trains nothing (it removes the seed folders of an earlier run).

# %%
#papermill_description=train_seeds
from amt_core.pipeline.seeds import train_seeds

seed_dirs = train_seeds(layout, seeds, seed, preset=model_preset, train_overrides=train_overrides)
seed_dirs

# %% [markdown]
# ## Learning curves and model selection

# %%
import pandas as pd

from amt_core.model.run_control import read_status
from amt_core.plots.style import as_image
from amt_core.plots.training import plot_learning_curves

log = pd.read_csv(layout.train_dir / "train_log.csv")
as_image(plot_learning_curves(log, read_status(layout.train_dir)))

# %%
log.tail(10)

# %% [markdown]
# How training ended: after its configured steps (`complete`), or stopped early by the `max_minutes` time cap. A stopped run is incomplete: its model is not the seed's result, and a warning below says so and how to finish it (`resume: true` in `train_overrides`). The cap never changes the LR schedule.

# %%
from amt_core.model.run_control import FINISH_RUN, check_status

check_status(layout.train_dir, FINISH_RUN)
