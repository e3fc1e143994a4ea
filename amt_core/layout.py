"""The run folder: where every stage of the study reads and writes (one place, so the notebooks, the
runner, the report and ``amt figures`` can never disagree on a path).

```
RUN/
  params.yaml  provenance.json  report.md  report.html
  cohort/                 the cohort folder (nnU-Net v2 raw + cases.csv), unless cohort_csv was given
  train/                  the model run: best.pt, last.pt, train_log.csv, config.json
  predictions/{tune,test}/ masks, probability maps and candidate tables
  evaluation/{tune,test}/ EvaluationResult.save(): per_case.csv, lesions.csv, froc_*.csv, summary.json
  evaluation/test_real_anatomy/  the real-anatomy test subset alone (cohorts with real_anatomy > 0): as
                          evaluation/test, plus tumour_free.csv (false positives on the same patients' CT
                          without the inserted tumour, predicted into predictions/real_backgrounds/)
  analysis/               statistics of the external test (CIs, FROC bands, subgroups, institutions, models,
                          the between-seed spread: seed_metrics.csv, seed_variance.csv/.json)
  seeds/seed_<k>/         with `seeds: [...]`, each seed other than `seed`: train/ (as RUN/train), and
                          predictions/test/, evaluation/test/ of its selected checkpoint
  tables/  figures/       manuscript tables (CSV + Markdown) and figures (PDF + PNG)
  notebooks/              executed notebooks and their HTML export
  .steps/                 one manifest per successful step (what the runner compares to skip it) and
                          hashes.json (SHA-256 of the files seen, by path, size and mtime)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (the tree in the module docstring), computed, never stored.

    It sits at the bottom of the package (it imports nothing of amt_core), so the pipeline, the plots, the
    explorer and the notebooks all take their paths from it.

    Attributes:
        root: the run folder (absolute; :meth:`of` resolves it).
        cohort_csv: an external cohort's ``cases.csv`` the run reads instead of its own ``cohort/``
            ('' for the run's own cohort); the cohort paths follow it.
    """

    root: Path
    cohort_csv: str = ""

    @classmethod
    def of(cls, run_dir: str | Path, cohort_csv: str = "") -> RunLayout:
        return cls(Path(run_dir).resolve(), cohort_csv or "")

    @property
    def cohort_dir(self) -> Path:
        return Path(self.cohort_csv).resolve().parent if self.cohort_csv else self.root / "cohort"

    @property
    def cases_csv(self) -> Path:
        return Path(self.cohort_csv).resolve() if self.cohort_csv else self.cohort_dir / "cases.csv"

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def model_path(self) -> Path:
        return self.train_dir / "best.pt"

    def predictions(self, split: str) -> Path:
        return self.root / "predictions" / split

    def evaluation(self, split: str) -> Path:
        return self.root / "evaluation" / split

    @property
    def seeds_dir(self) -> Path:
        """``RUN/seeds``: the models of the other seeds (``seeds: [...]``; the run's own model is RUN/train)."""
        return self.root / "seeds"

    def seed_dir(self, seed: int) -> Path:
        return self.seeds_dir / f"seed_{int(seed)}"

    def seed_train_dir(self, seed: int) -> Path:
        return self.seed_dir(seed) / "train"

    def seed_model_path(self, seed: int) -> Path:
        return self.seed_train_dir(seed) / "best.pt"

    def seed_predictions(self, seed: int, split: str = "test") -> Path:
        return self.seed_dir(seed) / "predictions" / split

    def seed_evaluation(self, seed: int, split: str = "test") -> Path:
        return self.seed_dir(seed) / "evaluation" / split

    def seed_numbers(self) -> list[int]:
        """The seeds with a folder in ``RUN/seeds/`` (sorted)."""
        if not self.seeds_dir.is_dir():
            return []
        names = (p.name.removeprefix("seed_") for p in self.seeds_dir.glob("seed_*") if p.is_dir())
        return sorted(int(n) for n in names if n.isdigit())

    def seed_model_paths(self) -> list[Path]:
        """``best.pt`` of every seed folder that has one (what the 02_train step wrote besides RUN/train)."""
        return [p for p in map(self.seed_model_path, self.seed_numbers()) if p.is_file()]

    def seed_result_dirs(self) -> list[Path]:
        """The test predictions and evaluation folders of every seed folder that has them (03_evaluate's)."""
        dirs = (d for k in self.seed_numbers() for d in (self.seed_predictions(k), self.seed_evaluation(k)))
        return [d for d in dirs if d.is_dir()]

    @property
    def real_anatomy_dir(self) -> Path:
        """``RUN/evaluation/test_real_anatomy``: the real-anatomy test subset evaluated on its own."""
        return self.evaluation("test_real_anatomy")

    @property
    def real_backgrounds_dir(self) -> Path:
        """``RUN/predictions/real_backgrounds``: the model on the real chest CTs without inserted tumours."""
        return self.predictions("real_backgrounds")

    def real_anatomy_dirs(self) -> list[Path]:
        """The real-anatomy folders of 03_evaluate that exist (none for a cohort without that subset)."""
        return [d for d in (self.real_backgrounds_dir, self.real_anatomy_dir) if d.is_dir()]

    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def steps_dir(self) -> Path:
        return self.root / ".steps"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    def is_run_folder(self) -> bool:
        """Whether ``root`` was written by ``amt run`` (it has ``.steps/`` or ``params.yaml``)."""
        return self.steps_dir.is_dir() or (self.root / "params.yaml").is_file()

    def cohort_files(self) -> list[Path]:
        """``cases.csv`` and every image and label it lists (what a step that reads the cohort depends on);
        just ``cases.csv`` while the table is missing or unreadable."""
        import csv

        files = [self.cases_csv]
        try:
            with open(self.cases_csv, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error):
            return files
        base = self.cases_csv.parent
        for row in rows:
            files.extend(base / row[c] for c in ("image", "label") if row.get(c))
        return files


def latest_run(runs_root: str | Path = "runs") -> Path:
    """The run folder directly under ``runs_root`` (``runs_root/NAME``) whose evaluation step finished
    last (what ``make figures`` and ``amt figures`` without ``--run`` read). Raises ``FileNotFoundError``
    naming ``runs_root`` when no run there has saved results."""
    import json

    root = Path(runs_root)
    done = []
    for run in (p for p in root.glob("*") if p.is_dir()):
        try:
            manifest = RunLayout.of(run).steps_dir / "03_evaluate.json"
            done.append((json.loads(manifest.read_text())["finished"], run))
        except (OSError, ValueError, KeyError):
            continue  # no manifest, or a damaged one: not a finished run
    if not done:
        raise FileNotFoundError(
            f"no finished run in {root}/ (a run folder with .steps/03_evaluate.json); "
            "run `make reproduce` or `amt run` first, or pass --run"
        )
    return max(done)[1]
