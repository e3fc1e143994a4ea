"""The case browser: pick a split, institution and case; scroll axial, coronal and sagittal slices with CT
window presets; see the reference (green) and predicted (orange) outlines; list the case's candidates
with their confidence and IoU; jump through the worst cases.

All logic is in plain methods (:meth:`CaseBrowser.render`, :meth:`CaseBrowser.select_case`,
:meth:`CaseBrowser.jump_to_worst`, ...) that the widget callbacks call, so a test can drive them
without a browser.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from amt_core.plots.style import ROLE
from amt_core.plots.viewing import (
    VIEWS,
    WINDOWS,
    apply_window,
    largest_slice,
    outline,
    view_aspect,
    view_axis,
    view_slice,
)
from amt_core.synth.summary import NOT_STATED

ALL = "(all)"


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float32) / 255


class CaseBrowser:
    """Browse the cases of a run. Build with :meth:`from_run`; display :attr:`widget` in a notebook."""

    def __init__(
        self,
        cases: pd.DataFrame,
        predictions: dict[str, Path] | None = None,
        per_case: pd.DataFrame | None = None,
        candidates: pd.DataFrame | None = None,
        *,
        split: str = "test",
        case: str | None = None,
        window: str = "mediastinum",
    ):
        self.cases = cases.reset_index(drop=True)
        self.predictions = {k: Path(v) for k, v in (predictions or {}).items()}
        self.per_case = per_case
        self.candidates = candidates
        self.window = window
        self.show_reference = True
        self.show_prediction = True
        self.slices: dict[str, int] = {}
        self._volumes: tuple[Any, np.ndarray, np.ndarray] | None = None  # image Volume, reference, prediction
        self._cands = pd.DataFrame()
        self._worst_rank = -1
        self._updating = False
        self._build_widgets()
        self.split.value = split if split in self.split.options else self.split.options[0]
        self._on_split()
        if case:
            self.select_case(case)

    # --- construction --------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | Path, cohort_csv: str = "", **kwargs) -> CaseBrowser:
        """A browser over the cohort, predictions and evaluation results of a run folder. Without
        ``cohort_csv``, the cohort the run was made with (a ``cohort_csv`` of its params, e.g. an imported or
        hybrid cohort, as ``amt figures`` finds it), else the run's own ``cohort/``."""
        from amt_core.data.cases import read_cases
        from amt_core.layout import RunLayout
        from amt_core.plots.manuscript import recorded_cohort_csv

        layout = RunLayout.of(run_dir, cohort_csv or recorded_cohort_csv(Path(run_dir)))
        cases = read_cases(layout.cases_csv, check_files=False)
        splits = [s for s in ("tune", "test", "train") if (cases["split"] == s).any()]
        per_case, cands = [], []
        for split in splits:
            ev = layout.evaluation(split)
            if (ev / "per_case.csv").is_file():
                per_case.append(pd.read_csv(ev / "per_case.csv"))
            for name in ("candidates.csv", "lesions.csv"):
                if (ev / name).is_file():
                    cands.append(pd.read_csv(ev / name))
                    break
        return cls(
            cases,
            {s: layout.predictions(s) for s in splits},
            pd.concat(per_case, ignore_index=True) if per_case else None,
            pd.concat(cands, ignore_index=True).drop_duplicates() if cands else None,
            **kwargs,
        )

    def _build_widgets(self) -> None:
        import ipywidgets as W

        splits = [s for s in ("test", "tune", "train") if (self.cases["split"] == s).any()]
        self.split = W.Dropdown(options=splits, description="Split")
        self.institution = W.Dropdown(options=[ALL], description="Institution")
        self.case = W.Dropdown(options=[], description="Case", layout=W.Layout(width="22em"))
        self.worst = W.Button(description="Next worst ▸", tooltip="jump to the next-worst case by Dice")
        self.window_buttons = W.ToggleButtons(
            options=list(WINDOWS),
            value=self.window,
            description="Window",
            style={"button_width": "9em"},
            layout=W.Layout(width="auto"),
        )
        self.ref_box = W.Checkbox(value=True, description="Reference (green)", indent=False)
        self.pred_box = W.Checkbox(value=True, description="Prediction (orange)", indent=False)
        self.sliders = {
            v: W.IntSlider(min=0, max=0, description=v.capitalize(), continuous_update=True) for v in VIEWS
        }
        # one box per view, the slice fitted inside it, so the three sliders line up
        self.images = {
            v: W.Image(format="png", layout=W.Layout(width="300px", height="300px", object_fit="contain"))
            for v in VIEWS
        }
        self.info = W.HTML()
        self.candidate_table = W.HTML()
        self.go_to = W.Dropdown(
            options=[("—", None)],
            description="Go to",
            layout=W.Layout(width="26em"),
            tooltip="centre the three views on a candidate",
        )
        self.split.observe(lambda ch: self._on_split(), names="value")
        self.institution.observe(lambda ch: None if self._updating else self._on_institution(), names="value")
        self.case.observe(lambda ch: self._on_case(), names="value")
        self.worst.on_click(lambda _: self.jump_to_worst())
        self.go_to.observe(
            lambda ch: self.go_to_candidate(ch["new"]) if ch["new"] is not None else None, names="value"
        )
        self.window_buttons.observe(lambda ch: self.set_window(ch["new"]), names="value")
        self.ref_box.observe(lambda ch: self._on_overlay(), names="value")
        self.pred_box.observe(lambda ch: self._on_overlay(), names="value")
        for view, slider in self.sliders.items():
            slider.observe(lambda ch, v=view: self.set_slice(v, ch["new"]), names="value")
        columns = [W.VBox([self.images[v], self.sliders[v]]) for v in VIEWS]
        self.widget = W.VBox(
            [
                W.HBox([self.split, self.institution, self.case, self.worst]),
                W.HBox([self.window_buttons, self.ref_box, self.pred_box]),
                W.HBox(columns),
                self.info,
                self.go_to,
                self.candidate_table,
            ]
        )

    # --- the case list --------------------------------------------------------------------------------
    def _dice(self) -> pd.Series:
        if self.per_case is None or "dice" not in self.per_case:
            return pd.Series(dtype=float)
        return self.per_case.drop_duplicates("case_id").set_index("case_id")["dice"]

    def visible_cases(self) -> pd.DataFrame:
        rows = self.cases[self.cases["split"] == self.split.value]
        if self.institution.value != ALL:
            rows = rows[rows["institution_id"].astype(str) == self.institution.value]
        return rows

    def _on_split(self) -> None:
        rows = self.cases[self.cases["split"] == self.split.value]
        insts = sorted(rows["institution_id"].astype(str).unique())
        self._worst_rank = -1
        self._updating = True
        try:
            self.institution.options = [ALL, *insts]
            self.institution.value = ALL
        finally:
            self._updating = False
        self._on_institution()

    def _on_institution(self) -> None:
        dice = self._dice()
        options = []
        for cid in self.visible_cases()["case_id"]:
            d = dice.get(cid, np.nan)
            options.append((f"{cid}  (Dice {d:.2f})" if np.isfinite(d) else cid, cid))
        self.case.options = options
        if options and self.case.value is None:
            self.case.value = options[0][1]

    def select_case(self, case_id: str) -> None:
        """Show ``case_id`` (switching split and institution filter as needed)."""
        row = self.cases[self.cases["case_id"] == case_id]
        if row.empty:
            raise KeyError(f"case {case_id!r} is not in the case table")
        split = row["split"].iloc[0]
        if self.split.value != split:
            self.split.value = split
        if case_id not in [v for _, v in self.case.options]:
            self.institution.value = ALL  # the case is filtered out: show the whole split
        self.case.value = case_id

    def worst_cases(self) -> list[str]:
        """The visible cases sorted by Dice, worst first (cases without a Dice last)."""
        dice = self._dice()
        ids = list(self.visible_cases()["case_id"])
        return sorted(ids, key=lambda c: (not np.isfinite(dice.get(c, np.nan)), dice.get(c, np.inf), c))

    def jump_to_worst(self) -> str:
        """Go to the next-worst visible case (the worst on the first click); returns its id."""
        order = self.worst_cases()
        self._worst_rank = (self._worst_rank + 1) % len(order)
        self.select_case(order[self._worst_rank])
        return order[self._worst_rank]

    # --- one case ---------------------------------------------------------------------------------
    def _loaded(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """(image Volume, reference mask, predicted mask) of the case on show."""
        if self._volumes is None:
            raise RuntimeError("no case loaded: select a case first")
        return self._volumes

    def _on_case(self) -> None:
        if self.case.value is None:
            return
        self._load(self.case.value)
        image, ref, pred = self._loaded()
        focus = ref if ref.any() else pred
        for view in VIEWS:
            axis = view_axis(view)
            slider = self.sliders[view]
            slider.max = image.array.shape[axis] - 1
            self.slices[view] = largest_slice(focus, axis)
            slider.value = self.slices[view]
        self._update_info()
        self.refresh()

    def _load(self, case_id: str) -> None:
        from amt_core.data.volume import read_label, read_volume

        row = self.cases[self.cases["case_id"] == case_id].iloc[0]
        image = read_volume(row["image"])
        ref = (
            read_label(row["label"], image).array > 0
            if Path(str(row["label"])).is_file()
            else np.zeros(image.shape, bool)
        )
        pred_path = self.predictions.get(row["split"], Path("/nonexistent")) / f"{case_id}.nii.gz"
        pred = read_label(pred_path, image).array > 0 if pred_path.is_file() else np.zeros(image.shape, bool)
        self._volumes = (image, ref, pred)

    def set_slice(self, view: str, index: int) -> None:
        self.slices[view] = int(index)
        if self._volumes is not None:
            self.images[view].value = self._png(view)

    def set_window(self, window: str) -> None:
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; choose one of {list(WINDOWS)}")
        self.window = window
        if self.window_buttons.value != window:
            self.window_buttons.value = window
        self.refresh()

    def _on_overlay(self) -> None:
        self.show_reference, self.show_prediction = self.ref_box.value, self.pred_box.value
        self.refresh()

    def refresh(self) -> None:
        if self._volumes is None:
            return
        for view in VIEWS:
            self.images[view].value = self._png(view)

    def render(self, view: str) -> np.ndarray:
        """The RGB (float, 0–1) display of the current slice of ``view``: windowed CT with outlines,
        resampled to square pixels."""
        image, ref, pred = self._loaded()
        idx = min(self.slices.get(view, 0), image.array.shape[view_axis(view)] - 1)
        grey = apply_window(view_slice(image.array, view, idx), self.window).astype(np.float32)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        layers = (
            (self.show_reference, ref, ROLE["reference"]),
            (self.show_prediction, pred, ROLE["prediction"]),
        )
        for show, mask, color in layers:
            if show:
                rgb[outline(view_slice(mask, view, idx))] = _rgb(color)
        aspect = view_aspect(image.spacing, view)
        if abs(aspect - 1) > 1e-3:
            rows = np.minimum(
                (np.arange(int(round(rgb.shape[0] * aspect))) / aspect).astype(int), rgb.shape[0] - 1
            )
            rgb = rgb[rows]
        return rgb

    def _png(self, view: str) -> bytes:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray((self.render(view) * 255).astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    def case_candidates(self) -> pd.DataFrame:
        """The candidates (or lesion rows) of the current case from the evaluation results, or from the
        predictions folder's ``{case}_candidates.csv``."""
        cid = self.case.value
        if self.candidates is not None and "case_id" in self.candidates:
            rows = self.candidates[self.candidates["case_id"] == cid]
            if len(rows):
                return rows.reset_index(drop=True)
        split = self.split.value
        path = self.predictions.get(split, Path("/nonexistent")) / f"{cid}_candidates.csv"
        return pd.read_csv(path) if path.is_file() else pd.DataFrame()

    def _update_info(self) -> None:
        cid = self.case.value
        row = self.cases[self.cases["case_id"] == cid].iloc[0]
        meta = ", ".join(
            f"{k}: {row[k] if pd.notna(row[k]) and str(row[k]) != '' else NOT_STATED}"
            for k in ("institution_id", "sex", "age", "histology", "vendor", "slice_thickness_mm", "contrast")
            if k in row.index
        )
        metrics = ""
        if self.per_case is not None:
            pc = self.per_case[self.per_case["case_id"] == cid]
            if len(pc):
                r = pc.iloc[0]
                metrics = " · ".join(
                    f"{m} {r[m]:.3f}"
                    for m in ("dice", "iou", "precision", "recall")
                    if m in r.index and pd.notna(r[m])
                )
        self.info.value = f"<b>{html.escape(str(cid))}</b> — {html.escape(meta)}<br>{html.escape(metrics)}"
        cands = self.case_candidates()
        keep = [
            c
            for c in cands.columns
            if any(
                k in c
                for k in ("confidence", "iou", "hit", "status", "volume", "candidate", "lesion", "tp", "fp")
            )
        ]
        shown = cands[keep] if keep else cands
        self.candidate_table.value = (
            "<b>Candidates</b><br>" + shown.to_html(index=False, float_format=lambda v: f"{v:.3f}")
            if len(shown)
            else "<i>no candidates</i>"
        )
        self._cands = cands
        options: list[tuple[str, int | None]] = [("—", None)]
        if {"x0", "x1", "y0", "y1", "z0", "z1"} <= set(cands.columns):
            for k, r in cands.iterrows():
                label = f"candidate {r.get('candidate_id', k + 1)}"
                for col, name in (("confidence", "conf"), ("best_iou", "IoU"), ("status", "")):
                    if col in r.index and pd.notna(r[col]):
                        label += f" · {name} {r[col]:.2f}" if name else f" · {r[col]}"
                options.append((label, int(k)))
        self.go_to.options = options
        self.go_to.value = None

    def go_to_candidate(self, row: int) -> None:
        """Centre the axial, coronal and sagittal slices on candidate row ``row`` of :meth:`case_candidates`."""
        r = self._cands.iloc[row]
        centre = {
            "sagittal": (r["x0"] + r["x1"] - 1) // 2,
            "coronal": (r["y0"] + r["y1"] - 1) // 2,
            "axial": (r["z0"] + r["z1"] - 1) // 2,
        }
        for view, index in centre.items():
            self.sliders[view].value = int(np.clip(index, 0, self.sliders[view].max))
